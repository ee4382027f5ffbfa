//! `protect_established`: how a peer with an established TCP connection is
//! spared when it is decided a scanner.
//!
//! - `"flows"` (the default, and what `true` means): the peer is blocked
//!   like any scanner, and the kernel lets the segments of the connections
//!   the host has open with it through (found in the kernel's own socket
//!   table, `bpf_sk_lookup_tcp`, only for a blocked source's packets). A
//!   spoofed scan cannot cut a session; a real attacker that holds one and
//!   scans is blocked all the same. Its cost: a scan spoofed with a peer's
//!   address stops that peer's *new* connections for the block's time.
//! - `"address"`: the peer is never blocked while a connection is open (the
//!   behaviour before "flows"). A scan spoofed with its address costs it
//!   nothing; a scanner that first opens a session is never blocked.
//! - `"off"` (or `false`): peers are blocked like anyone, sessions included.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Established {
    #[default]
    Flows,
    Address,
    Off,
}

impl Established {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Flows => "flows",
            Self::Address => "address",
            Self::Off => "off",
        }
    }
}

impl Serialize for Established {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Established {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Flag(bool),
            Name(String),
        }
        match Written::deserialize(d)? {
            Written::Flag(true) => Ok(Self::Flows),
            Written::Flag(false) => Ok(Self::Off),
            Written::Name(n) => match n.as_str() {
                "flows" => Ok(Self::Flows),
                "address" => Ok(Self::Address),
                "off" => Ok(Self::Off),
                other => Err(serde::de::Error::custom(format!(
                    "protect_established is \"flows\", \"address\" or \"off\" (or true, false), not {other:?}"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Section {
        protect_established: Established,
    }

    fn parse(text: &str) -> Result<Established, toml::de::Error> {
        toml::from_str::<Section>(text).map(|s| s.protect_established)
    }

    #[test]
    fn every_spelling_reads_and_prints_as_its_mode() {
        assert_eq!(
            parse("protect_established = true").ok(),
            Some(Established::Flows)
        );
        assert_eq!(
            parse("protect_established = false").ok(),
            Some(Established::Off)
        );
        assert_eq!(
            parse("protect_established = \"address\"").ok(),
            Some(Established::Address)
        );
        assert_eq!(
            parse("protect_established = \"flows\"").ok(),
            Some(Established::Flows)
        );
        let e = parse("protect_established = \"sessions\"")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("\"flows\", \"address\" or \"off\"")));
        let shown = toml::to_string(&Section {
            protect_established: Established::Address,
        });
        assert_eq!(
            shown.ok().as_deref(),
            Some("protect_established = \"address\"\n")
        );
    }
}
