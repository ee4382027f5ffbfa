//! Which ports an entry probed in its life, read back from PORTS when its
//! scan ends, for the history (`scanner history --port`): an event's
//! `top_ports` names ten.
//!
//! Entries of up to [`SAMPLE_PORTS`] ports are answered from their sample
//! (a lookup per port and protocol); a bigger one needs the pairs
//! themselves, so PORTS is read once, in batches, for all of them together.
//! PORTS is an LRU: a pair evicted before the scan ended (a long scan on a
//! full map) is missing from the answer.

use std::{collections::HashMap, os::fd::AsFd as _};

use scanner_common::{
    IPPROTO_ANY, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, PortKey, PortSeen, SAMPLE_PORTS,
    SourceStats, names::PORTS_MAP,
};

use super::{Maps, PollError, batch_err};
use crate::{detect::EntryId, kernel::batch};

/// (protocol, port) pairs, sorted.
pub(crate) type Probed = Vec<(u8, u16)>;

impl Maps {
    /// The (protocol, port) pairs each of `ended` probed in the life its
    /// stats stand for.
    pub fn probed(
        &self,
        ended: &[(EntryId, SourceStats)],
    ) -> Result<HashMap<EntryId, Probed>, PollError> {
        let (small, big): (Vec<_>, Vec<_>) = ended
            .iter()
            .partition(|(_, s)| s.ports as usize <= SAMPLE_PORTS);
        let mut out: HashMap<EntryId, Probed> = small
            .iter()
            .map(|(id, stats)| (*id, self.sampled(*id, stats)))
            .collect();
        if big.is_empty() {
            return Ok(out);
        }
        let lives: HashMap<EntryId, u64> =
            big.iter().map(|(id, s)| (*id, s.first_seen_ns)).collect();
        batch::for_each(
            self.fds.ports.as_fd(),
            1,
            batch::CHUNK,
            |keys: &[PortKey], values: &[PortSeen]| {
                for (k, v) in keys.iter().zip(values) {
                    let id = EntryId {
                        scope: k.scope,
                        key: k.source,
                    };
                    if lives.get(&id) == Some(&v.life_ns) {
                        out.entry(id).or_default().push((k.proto, k.port));
                    }
                }
            },
        )
        .map_err(batch_err(PORTS_MAP))?;
        for pairs in out.values_mut() {
            pairs.sort_unstable();
            pairs.dedup();
        }
        Ok(out)
    }

    /// The pairs of an entry whose every port is in its sample.
    fn sampled(&self, id: EntryId, stats: &SourceStats) -> Probed {
        let n = (stats.ports as usize).min(SAMPLE_PORTS);
        let mut pairs: Probed = stats.sample_ports[..n]
            .iter()
            .flat_map(|&port| {
                [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ANY]
                    .into_iter()
                    .filter(move |&proto| {
                        self.pair(id, proto, port)
                            .is_some_and(|seen| seen.life_ns == stats.first_seen_ns)
                    })
                    .map(move |proto| (proto, port))
            })
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        pairs
    }
}

/// Pairs as ranges of consecutive ports per protocol: (protocol, first,
/// last). A scan of 1-1000 is one range.
pub(crate) fn ranges(pairs: &[(u8, u16)]) -> Vec<(u8, u16, u16)> {
    let mut out: Vec<(u8, u16, u16)> = Vec::new();
    for &(proto, port) in pairs {
        match out.last_mut() {
            Some((p, _, hi)) if *p == proto && u32::from(*hi) + 1 == u32::from(port) => *hi = port,
            Some((p, _, hi)) if *p == proto && *hi == port => {}
            _ => out.push((proto, port, port)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ports_of_a_protocol_make_one_range() {
        let pairs = [
            (6, 1),
            (6, 2),
            (6, 3),
            (6, 5),
            (6, 5),
            (17, 6),
            (17, 7),
            (132, 65535),
        ];
        assert_eq!(
            ranges(&pairs),
            [(6, 1, 3), (6, 5, 5), (17, 6, 7), (132, 65535, 65535)]
        );
        assert!(ranges(&[]).is_empty());
        assert_eq!(ranges(&[(6, 65534), (6, 65535)]), [(6, 65534, 65535)]);
    }
}
