//! The interfaces the daemon watches: attached, removed, back again.

use crate::{
    config::launch::Launch,
    daemon::respond::{Output, emit_interface},
    kernel::{iface, load::Attached, pin::PinDir},
    sinks::event::{InterfaceName, InterfaceReason},
};

/// The kernel counts packets per interface in IFACE_SLOTS slots by ifindex:
/// two watched interfaces in one slot share their per-interface counters.
pub(super) fn warn_shared_counter_slots(attached: &[Attached]) {
    let slot = |a: &Attached| a.index.map(|i| i % scanner_common::counter::IFACE_SLOTS);
    for (i, a) in attached.iter().enumerate() {
        for b in &attached[i + 1..] {
            if slot(a).is_some() && slot(a) == slot(b) {
                tracing::warn!(
                    first = %a.name,
                    second = %b.name,
                    "these interfaces share a packet-counter slot: their per-interface metrics count both"
                );
            }
        }
    }
}

/// Notices interfaces that went away (their XDP program went with them),
/// and attaches again when they come back (unless `--no-reattach`).
/// Returns whether anything is still watched or awaited.
pub(super) fn watch_interfaces(
    attached: &mut [Attached],
    ebpf: &mut aya::Ebpf,
    pins: &PinDir,
    args: &Launch,
    out: &mut Output,
) -> bool {
    for a in attached.iter_mut() {
        let now = iface::lookup(&a.name);
        if a.index.is_some() && a.index != now {
            if args.no_reattach {
                tracing::warn!(iface = %a.name, "interface removed: no longer watched (--no-reattach)");
            } else {
                tracing::warn!(iface = %a.name, "interface removed: watched again as soon as it is back");
            }
            pins.release(&a.name);
            a.index = None;
            emit_interface(
                &mut out.reporter,
                InterfaceName::Detached,
                &a.name,
                a.mode,
                Some(InterfaceReason::Removed),
            );
        }
        let (None, Some(index)) = (a.index, now) else {
            continue;
        };
        if args.no_reattach {
            continue;
        }
        match pins.attach(ebpf, &a.name, args.xdp_mode) {
            Ok((mode, _)) => {
                tracing::info!(iface = %a.name, mode = mode.as_str(), "interface is back: XDP program attached again");
                a.mode = mode;
                a.index = Some(index);
                out.names.insert(index, a.name.clone());
                emit_interface(
                    &mut out.reporter,
                    InterfaceName::Attached,
                    &a.name,
                    mode,
                    Some(InterfaceReason::Reappeared),
                );
            }
            Err(e) => {
                tracing::warn!(iface = %a.name, "cannot attach again yet: {:#}", anyhow::Error::from(e))
            }
        }
    }
    !args.no_reattach || attached.iter().any(|a| a.index.is_some())
}
