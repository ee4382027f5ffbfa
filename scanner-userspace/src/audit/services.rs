//! Well-known services by port, and why the commonly attacked ones are a
//! risk when exposed. The audit's notes; nothing here decides detection.

/// A well-known service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Service {
    pub name: &'static str,
    /// Why exposing it invites attack, for the commonly attacked services.
    pub risk: Option<&'static str>,
}

/// (tcp, udp, port, name, risk). `tcp`/`udp` say which protocols the entry
/// names.
type Row = (bool, bool, u16, &'static str, Option<&'static str>);

const TABLE: &[Row] = &[
    (
        true,
        false,
        21,
        "ftp",
        Some("FTP: clear-text logins, anonymous access and bounce attacks; use SFTP"),
    ),
    (
        true,
        false,
        22,
        "ssh",
        Some("SSH: constant password brute force; keys only, rate-limit, or restrict sources"),
    ),
    (
        true,
        false,
        23,
        "telnet",
        Some("Telnet: clear-text logins, a top botnet target; disable it, use SSH"),
    ),
    (
        true,
        false,
        25,
        "smtp",
        Some("SMTP: open relay and user enumeration (VRFY/EXPN) if misconfigured"),
    ),
    (
        true,
        true,
        53,
        "domain",
        Some("DNS: open resolvers amplify DDoS; zone transfers leak the network"),
    ),
    (
        false,
        true,
        69,
        "tftp",
        Some("TFTP: no authentication at all; never expose"),
    ),
    (
        true,
        false,
        80,
        "http",
        Some("HTTP: web application attacks, clear text; keep the server patched"),
    ),
    (true, true, 88, "kerberos", None),
    (
        true,
        false,
        110,
        "pop3",
        Some("POP3: clear-text logins; use POP3S (995)"),
    ),
    (
        true,
        true,
        111,
        "sunrpc",
        Some("rpcbind: maps RPC services for attackers, used for DDoS amplification"),
    ),
    (
        false,
        true,
        123,
        "ntp",
        Some("NTP: monlist amplification on old servers"),
    ),
    (
        true,
        true,
        135,
        "msrpc",
        Some("MS RPC: endpoint mapper, long history of remote exploits"),
    ),
    (
        true,
        true,
        137,
        "netbios-ns",
        Some("NetBIOS: leaks host and user names"),
    ),
    (
        false,
        true,
        138,
        "netbios-dgm",
        Some("NetBIOS: leaks host and user names"),
    ),
    (
        true,
        false,
        139,
        "netbios-ssn",
        Some("NetBIOS/SMB: file shares, worms and credential relaying"),
    ),
    (
        true,
        false,
        143,
        "imap",
        Some("IMAP: clear-text logins; use IMAPS (993)"),
    ),
    (
        false,
        true,
        161,
        "snmp",
        Some("SNMP: default communities leak and change configuration"),
    ),
    (
        true,
        false,
        389,
        "ldap",
        Some("LDAP: directory data and anonymous binds"),
    ),
    (true, false, 443, "https", None),
    (
        true,
        false,
        445,
        "microsoft-ds",
        Some("SMB: EternalBlue/WannaCry class exploits, ransomware entry point; never expose"),
    ),
    (false, true, 500, "isakmp", None),
    (
        true,
        false,
        514,
        "shell",
        Some("rsh: trust by address, no real authentication"),
    ),
    (
        false,
        true,
        514,
        "syslog",
        Some("syslog: unauthenticated log injection"),
    ),
    (true, false, 587, "submission", None),
    (
        true,
        false,
        631,
        "ipp",
        Some("CUPS/IPP: remote code execution history (2024 cups-browsed)"),
    ),
    (true, false, 636, "ldaps", None),
    (
        true,
        false,
        873,
        "rsync",
        Some("rsync: modules often readable without authentication"),
    ),
    (true, false, 993, "imaps", None),
    (true, false, 995, "pop3s", None),
    (
        true,
        false,
        1080,
        "socks",
        Some("SOCKS: an open proxy relays attacks"),
    ),
    (
        true,
        false,
        1433,
        "ms-sql-s",
        Some("SQL Server: brute force of 'sa', data theft and command execution"),
    ),
    (
        false,
        true,
        1434,
        "ms-sql-m",
        Some("SQL Server browser: Slammer worm, amplification"),
    ),
    (
        true,
        false,
        1521,
        "oracle",
        Some("Oracle TNS listener: brute force, poisoning"),
    ),
    (
        false,
        true,
        1900,
        "ssdp",
        Some("SSDP/UPnP: DDoS amplification"),
    ),
    (
        true,
        true,
        2049,
        "nfs",
        Some("NFS: exports readable by address, no user authentication"),
    ),
    (
        true,
        false,
        2375,
        "docker",
        Some("Docker API without TLS: full root on the host"),
    ),
    (
        true,
        false,
        3306,
        "mysql",
        Some("MySQL: password brute force and data theft"),
    ),
    (
        true,
        false,
        3389,
        "ms-wbt-server",
        Some("RDP: brute force and BlueKeep class exploits, ransomware entry point"),
    ),
    (
        true,
        true,
        5060,
        "sip",
        Some("SIP: toll fraud and account brute force"),
    ),
    (
        true,
        false,
        5432,
        "postgresql",
        Some("PostgreSQL: password brute force, COPY ... PROGRAM execution"),
    ),
    (
        true,
        false,
        5900,
        "vnc",
        Some("VNC: weak or no passwords, clear-text sessions"),
    ),
    (
        true,
        false,
        5985,
        "wsman",
        Some("WinRM: remote command execution with stolen credentials"),
    ),
    (
        true,
        false,
        6379,
        "redis",
        Some("Redis: no authentication by default; attackers write SSH keys and cron jobs"),
    ),
    (
        true,
        false,
        8080,
        "http-alt",
        Some("HTTP proxy/admin consoles: often unauthenticated"),
    ),
    (true, false, 8443, "https-alt", None),
    (
        true,
        false,
        9200,
        "elasticsearch",
        Some("Elasticsearch: no authentication by default; data theft and ransom"),
    ),
    (
        true,
        false,
        11211,
        "memcached",
        Some("memcached: no authentication; 50,000x UDP amplification"),
    ),
    (
        false,
        true,
        11211,
        "memcached",
        Some("memcached: no authentication; 50,000x UDP amplification"),
    ),
    (
        true,
        false,
        27017,
        "mongodb",
        Some("MongoDB: no authentication by default; data theft and ransom"),
    ),
];

/// The service usually on `port` (`proto` is 6 for TCP, 17 for UDP).
pub(crate) fn lookup(proto: u8, port: u16) -> Option<Service> {
    TABLE
        .iter()
        .find(|(tcp, udp, p, _, _)| *p == port && if proto == 17 { *udp } else { *tcp })
        .map(|&(_, _, _, name, risk)| Service { name, risk })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_targets_carry_a_risk_note() {
        for port in [
            21, 22, 23, 25, 53, 80, 111, 135, 139, 445, 1433, 3306, 3389, 5432, 5900, 6379, 9200,
            11211, 27017,
        ] {
            let s = lookup(6, port);
            assert!(s.and_then(|s| s.risk).is_some(), "tcp/{port}: {s:?}");
        }
        assert_eq!(lookup(6, 1433).map(|s| s.name), Some("ms-sql-s"));
        assert!(lookup(17, 53).and_then(|s| s.risk).is_some());
    }

    #[test]
    fn protocols_are_told_apart() {
        assert_eq!(lookup(17, 514).map(|s| s.name), Some("syslog"));
        assert_eq!(lookup(6, 514).map(|s| s.name), Some("shell"));
        assert_eq!(lookup(17, 22), None);
        assert_eq!(lookup(6, 47_123), None);
        assert_eq!(lookup(6, 443).and_then(|s| s.risk), None);
    }
}
