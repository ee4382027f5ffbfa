//! The long memory as the daemon's thread runs it, for benches and tests
//! outside this crate: the same store, the same walks, the default
//! settings, and time as a parameter (a week of probes in seconds).

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ipnet::IpNet;

use super::{Core, Probe, Seen, Settings, open};
use crate::{config::slow::SlowConfig, detect::trw::Probabilities};

/// One probe: (source, protocol, port, open, Unix ms).
pub type Probed = (IpAddr, u8, u16, bool, i64);

/// A long memory over a history file, with the default settings.
pub struct LongMemory {
    core: Core,
    settings: Settings,
}

impl LongMemory {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let config = SlowConfig::default();
        let rule = config
            .rule(&Probabilities::default())
            .context("the default slow-scan rule")?;
        Ok(Self {
            core: Core { conn: open(path)? },
            settings: Settings {
                rule,
                window: config.window,
                max_rows: config.max_rows,
            },
        })
    }

    /// A poll's probes taken as the thread takes them (added, then every
    /// source and /24 or /64 they touched walked) at `now_ms`: the slow
    /// scans decided.
    pub fn take(&mut self, probes: &[Probed], now_ms: i64) -> anyhow::Result<usize> {
        let probes: Vec<Probe> = probes
            .iter()
            .map(|&(source, proto, port, open, ms)| {
                Ok(Probe {
                    seen: Seen {
                        source,
                        net: net_of(source)?,
                        proto,
                        port,
                        open,
                        ms,
                    },
                    ifindex: 1,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(self.core.handle(&probes, &self.settings, now_ms)?.len())
    }

    /// The walks a new probe from `source` costs at `now_ms` (its record
    /// and its prefix's), without adding anything.
    pub fn walk(&self, source: IpAddr, now_ms: i64) -> anyhow::Result<Duration> {
        let since = now_ms - i64::try_from(self.settings.window.as_millis())?;
        let net = net_of(source)?;
        let began = Instant::now();
        self.core
            .walk_prefix(net, 1, &self.settings, since, now_ms)?;
        self.core
            .walk_source(source, net, 1, &self.settings, (since, now_ms))?;
        Ok(began.elapsed())
    }

    /// Rows past the window and the cap forgotten as of `now_ms`.
    pub fn prune(&self, now_ms: i64) -> anyhow::Result<usize> {
        Ok(self.core.prune(&self.settings, now_ms)?)
    }

    pub fn rows(&self) -> anyhow::Result<u64> {
        Ok(super::store::rows(&self.core.conn)?)
    }
}

/// The daemon's default prefix of `source`: its /24 or /64.
fn net_of(source: IpAddr) -> anyhow::Result<IpNet> {
    let len = if source.is_ipv4() { 24 } else { 64 };
    Ok(IpNet::new(source, len)?.trunc())
}
