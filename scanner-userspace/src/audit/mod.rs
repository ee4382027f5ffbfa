//! `scanner ports`: the host's listening sockets, their services and risks,
//! and how often scanners probe them (from the daemon's PORT_HITS counts).

pub(crate) mod listeners;
pub(crate) mod services;
mod sock_diag;
mod v6only;

use std::{collections::HashMap, net::IpAddr};

use scanner_common::{IPPROTO_ANY, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};
use serde::Serialize;

use crate::{audit::listeners::Listener, detect::hits::PortHit};

/// One listening socket in the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct AuditRow {
    pub proto: &'static str,
    pub port: u16,
    pub address: String,
    /// Bound to every address (0.0.0.0 or ::): reachable on every interface.
    pub all_addresses: bool,
    /// Reachable from the network (not loopback-only).
    pub exposed: bool,
    pub service: Option<&'static str>,
    pub risk: Option<&'static str>,
    pub process: Option<String>,
    pub pid: Option<u32>,
    /// From the daemon; absent when it is not running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes_last_hour: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources_last_hour: Option<u64>,
}

/// The process that owns a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub pid: u32,
    pub name: String,
}

/// The name of a protocol as reports show it; `ip` for `IPPROTO_ANY`,
/// whose "port" is an IP protocol number (`ip/47` is GRE).
pub(crate) fn proto_name(proto: u8) -> &'static str {
    match proto {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_SCTP => "sctp",
        IPPROTO_ANY => "ip",
        _ => "?",
    }
}

/// The protocol number of a name [`proto_name`] gives.
pub(crate) fn proto_number(name: &str) -> u8 {
    match name {
        "udp" => IPPROTO_UDP,
        "sctp" => IPPROTO_SCTP,
        "ip" => IPPROTO_ANY,
        _ => IPPROTO_TCP,
    }
}

/// The audit: one row per listener, sorted by protocol and port.
pub(crate) fn rows(
    listeners: &[Listener],
    owners: &HashMap<u64, Owner>,
    hits: Option<&[PortHit]>,
) -> Vec<AuditRow> {
    let mut rows: Vec<AuditRow> = listeners
        .iter()
        .map(|l| {
            let service = services::lookup(l.proto, l.port);
            let owner = owners.get(&l.inode).filter(|_| l.inode != 0);
            let hit = hits.map(|h| {
                h.iter()
                    .find(|x| x.proto == l.proto && x.port == l.port)
                    .copied()
                    .unwrap_or_default()
            });
            AuditRow {
                proto: proto_name(l.proto),
                port: l.port,
                address: l.addr.to_string(),
                all_addresses: is_unspecified(l.addr),
                exposed: l.is_exposed(),
                service: service.map(|s| s.name),
                risk: service.and_then(|s| s.risk),
                process: owner.map(|o| o.name.clone()),
                pid: owner.map(|o| o.pid),
                probes: hit.map(|h| h.probes),
                sources: hit.map(|h| h.sources),
                probes_last_hour: hit.map(|h| h.probes_last_hour),
                sources_last_hour: hit.map(|h| h.sources_last_hour),
            }
        })
        .collect();
    rows.sort_by(|a, b| (a.proto, a.port, &a.address).cmp(&(b.proto, b.port, &b.address)));
    rows
}

fn is_unspecified(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_unspecified(),
        IpAddr::V6(a) => a.is_unspecified(),
    }
}

/// Socket inode -> owning process, from /proc/<pid>/fd. Processes we may
/// not look into (another user's, without CAP_SYS_PTRACE) are skipped.
pub(crate) fn socket_owners() -> HashMap<u64, Owner> {
    let mut owners = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return owners;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let name = std::fs::read_to_string(entry.path().join("comm"))
            .map(|c| c.trim_end().to_owned())
            .unwrap_or_default();
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(inode) = socket_inode(&link.to_string_lossy()) {
                owners.entry(inode).or_insert_with(|| Owner {
                    pid,
                    name: name.clone(),
                });
            }
        }
    }
    owners
}

/// The inodes of this process's own sockets (its metrics endpoint among
/// them): a few descriptors, cheap to read on every refresh.
pub(crate) fn own_sockets() -> std::collections::HashSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| socket_inode(&link.to_string_lossy()))
        .collect()
}

/// The inode in a `socket:[12345]` link.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn listener(proto: u8, addr: IpAddr, port: u16, inode: u64) -> Listener {
        Listener {
            proto,
            addr,
            port,
            inode,
            v6only: false,
        }
    }

    #[test]
    fn rows_carry_service_risk_owner_and_probes() {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let listeners = [
            listener(6, IpAddr::V6(Ipv6Addr::LOCALHOST), 5432, 0),
            listener(6, any, 23, 7),
        ];
        let owners = HashMap::from([(
            7,
            Owner {
                pid: 42,
                name: "telnetd".into(),
            },
        )]);
        let hits = [PortHit {
            proto: 6,
            port: 23,
            probes: 9,
            sources: 3,
            probes_last_hour: 4,
            sources_last_hour: 1,
            last_hour_s: 3600,
            open: true,
        }];
        let rows = rows(&listeners, &owners, Some(&hits));
        assert_eq!(rows[0].port, 23, "sorted by port");
        let telnet = &rows[0];
        assert_eq!(telnet.service, Some("telnet"));
        assert!(telnet.risk.is_some_and(|r| r.contains("Telnet")));
        assert!(telnet.all_addresses && telnet.exposed);
        assert_eq!(
            (telnet.process.as_deref(), telnet.pid),
            (Some("telnetd"), Some(42))
        );
        assert_eq!((telnet.probes, telnet.sources), (Some(9), Some(3)));
        assert_eq!(telnet.probes_last_hour, Some(4));
        let pg = &rows[1];
        assert!(!pg.exposed && !pg.all_addresses);
        assert_eq!(pg.probes, Some(0), "no probes counted is zero");
        assert_eq!(pg.process, None);
        let offline = super::rows(&listeners, &owners, None);
        assert_eq!(offline[0].probes, None, "no daemon: no counts");
    }

    #[test]
    fn socket_links_give_inodes() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[1]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn own_sockets_are_this_process_s() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let inode = crate::audit::listeners::listeners()
            .into_iter()
            .find(|x| x.port == port)
            .map(|x| x.inode)
            .unwrap();
        assert!(own_sockets().contains(&inode));
    }

    #[test]
    fn this_process_owns_its_sockets() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let owners = socket_owners();
        let me = crate::audit::listeners::listeners()
            .into_iter()
            .find(|x| x.port == port)
            .and_then(|x| owners.get(&x.inode).cloned());
        assert_eq!(me.map(|o| o.pid), Some(std::process::id()));
    }
}
