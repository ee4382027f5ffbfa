//! Every nmap scan type that reaches a host, with real nmap between
//! namespaces, over IPv4 with and without `-f` (fragmented probes) and over
//! IPv6 where nmap supports it (`nmap -6` refuses `-f`): each is detected
//! from the right source with the kind its probes show. The families of
//! `scan_families` (-sS, -sT, -sF, -sN, -sX, -sM, -sA, -sU) are there;
//! here are the rest, and the fragmented form of each.
//!
//! A fragmented TCP probe's first fragment carries 8 (`-f`) or 16 (`-ff`)
//! bytes of its header: the ports, not the flags, so its kind is
//! `fragmented` whatever the flags were. nmap fragments only its raw TCP
//! scans (it refuses `-f` with -sU, -sY, -sZ and -sO: "Fragscan only works
//! with ... ACK, FIN, Maimon, NULL, SYN, Window, and XMAS scan types"); a
//! cut SCTP or UDP header is a parser case (`packets::cases`), checked on
//! the host and in the kernel.

use scanner_tests::{Lab, require_root};

use crate::scan_families::{detected_as, nmap};

const V4: &str = Lab::ATTACKER_V4;
const V6: &str = Lab::ATTACKER_V6;

// Window scan: the same ACK probes as -sA (it reads the replies' window).
family!(
    nmap_window,
    V4,
    "ack",
    nmap(&["-sW", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_window_over_ipv6,
    V6,
    "ack",
    nmap(&["-6", "-sW", "-p1-200", "2001:db8::2"])
);
// Flag sets no stack sends.
family!(
    nmap_scanflags_synfin,
    V4,
    "invalid-flags",
    nmap(&["--scanflags", "SYNFIN", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_scanflags_every_flag,
    V4,
    "invalid-flags",
    nmap(&["--scanflags", "URGACKPSHRSTSYNFIN", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_scanflags_synfin_over_ipv6,
    V6,
    "invalid-flags",
    nmap(&["-6", "--scanflags", "SYNFIN", "-p1-200", "2001:db8::2"])
);
// SCTP: ports too.
family!(
    nmap_sctp_init,
    V4,
    "sctp-init",
    nmap(&["-sY", "--max-retries", "0", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_sctp_cookie_echo,
    V4,
    "sctp-cookie-echo",
    nmap(&["-sZ", "--max-retries", "0", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_sctp_init_over_ipv6,
    V6,
    "sctp-init",
    nmap(&["-6", "-sY", "--max-retries", "0", "-p1-200", "2001:db8::2"])
);
family!(
    nmap_sctp_cookie_echo_over_ipv6,
    V6,
    "sctp-cookie-echo",
    nmap(&["-6", "-sZ", "--max-retries", "0", "-p1-200", "2001:db8::2"])
);
// IP protocol scan: fan-out over protocol numbers.
family!(
    nmap_ip_protocol,
    V4,
    "ip-protocol",
    nmap(&["-sO", "--max-retries", "0", "198.18.0.2"])
);
family!(
    nmap_ip_protocol_over_ipv6,
    V6,
    "ip-protocol",
    nmap(&["-6", "-sO", "--max-retries", "0", "2001:db8::2"])
);

// Fragmented (-f: 8 bytes of transport header in the first fragment).
family!(
    nmap_syn_fragmented,
    V4,
    "fragmented",
    nmap(&["-sS", "-f", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_syn_fragmented_twice,
    V4,
    "fragmented",
    nmap(&["-sS", "-ff", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_syn_mtu_8,
    V4,
    "fragmented",
    nmap(&["-sS", "--mtu", "8", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_ack_fragmented,
    V4,
    "fragmented",
    nmap(&["-sA", "-f", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_window_fragmented,
    V4,
    "fragmented",
    nmap(&["-sW", "-f", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_maimon_fragmented,
    V4,
    "fragmented",
    nmap(&["-sM", "-f", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_null_fragmented,
    V4,
    "fragmented",
    nmap(&["-sN", "-f", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_fin_fragmented,
    V4,
    "fragmented",
    nmap(&["-sF", "-f", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_xmas_fragmented,
    V4,
    "fragmented",
    nmap(&["-sX", "-f", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_scanflags_fragmented,
    V4,
    "fragmented",
    nmap(&["--scanflags", "SYNFIN", "-f", "-p1-200", "198.18.0.2"])
);

// The TCP families of `scan_families` over IPv6 (xmas and udp are there).
family!(
    nmap_syn_over_ipv6,
    V6,
    "syn",
    nmap(&["-6", "-sS", "-p1-200", "2001:db8::2"])
);
family!(
    nmap_connect_over_ipv6,
    V6,
    "connect",
    nmap(&["-6", "-sT", "-p1-200", "2001:db8::2"])
);
family!(
    nmap_ack_over_ipv6,
    V6,
    "ack",
    nmap(&["-6", "-sA", "-p1-200", "2001:db8::2"])
);
family!(
    nmap_maimon_over_ipv6,
    V6,
    "maimon",
    nmap(&["-6", "-sM", "-p1-200", "2001:db8::2"])
);
family!(
    nmap_null_over_ipv6,
    V6,
    "null",
    nmap(&["-6", "-sN", "-p1-200", "2001:db8::2"])
);
family!(
    nmap_fin_over_ipv6,
    V6,
    "fin",
    nmap(&["-6", "-sF", "-p1-200", "2001:db8::2"])
);
