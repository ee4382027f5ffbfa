//! The upkeep a start and the running loop both do: the host's open ports
//! into PORT_BITS, the protected gateways and resolvers into PROTECTED, and
//! tracked sources the allowlist now covers forgotten.

use std::net::IpAddr;

use anyhow::Context as _;

use crate::{
    audit::listeners,
    kernel::{
        maps::Maps,
        policy::Policy,
        port_bits::{self, PortBits},
        protect::{Protected, ProtectedBy},
    },
};

/// Forgets admitted sources the allowlist now covers: pinned from a run
/// with another allowlist, or admitted before a rule was added. The kernel
/// checks the allowlist when it admits a source, not on every probe.
pub(super) fn forget_allowlisted(maps: &mut Maps, policy: &Policy) {
    let nets = policy.allowlist();
    let n = maps.forget_where(|k| {
        let ip = crate::sinks::event::ip_of(k);
        nets.iter().any(|net| net.contains(&ip))
    });
    if n > 0 {
        tracing::info!("{n} tracked sources are allowlisted now: forgotten");
    }
}

/// Re-reads the protected gateways and resolvers into the kernel; logs
/// them when they changed (and tells the kernel its cached blocks may
/// be stale: a protected address is spared by most blocks).
pub(super) fn log_protected(
    protected: &mut Protected,
    policy: &mut Policy,
) -> anyhow::Result<Vec<IpAddr>> {
    if let Some(now) = protected.refresh().context("writing the PROTECTED map")? {
        policy
            .rules_changed()
            .context("writing the RULES_GENERATION map")?;
        let shown: Vec<String> = now
            .iter()
            .map(|(ip, why)| format!("{ip} ({})", ProtectedBy::of(*why)))
            .collect();
        tracing::info!(protected = %shown.join(" "), "never blocked (still reported): gateways and resolvers");
        return Ok(now.keys().copied().collect());
    }
    Ok(Vec::new())
}

/// Writes the host's open ports into PORT_BITS; returns the listeners read.
pub(super) fn refresh_open_ports(
    bits: &mut PortBits,
    ignored: &[u16],
) -> anyhow::Result<Vec<listeners::Listener>> {
    let listeners = listeners::listeners();
    let changed = bits
        .update(&port_bits::bitmap(&listeners, ignored))
        .context("writing the PORT_BITS map")?;
    if changed > 0 {
        let open: Vec<String> = listeners::open_ports(&listeners)
            .into_iter()
            .map(|(proto, port)| format!("{}/{port}", crate::audit::proto_name(proto)))
            .collect();
        tracing::debug!(open = %open.join(" "), "open ports updated");
    }
    Ok(listeners)
}
