//! Property tests of the shared parser: arbitrary bytes never panic, and a
//! frame's classification depends only on the bytes the parser was allowed
//! to read.

use std::cell::RefCell;

use proptest::prelude::*;
use scanner_common::{
    Config, Frame, Header, PLAIN_TCP4, ParseError, Parsed, Shape, Transport, class,
    earns_benign_credit, is_accepted_traffic, is_probe, is_stack_syn, is_stealth, parse, shape,
    tcp_class, walk,
};

/// An Ethernet + IPv4 + TCP frame with the given fields.
fn frame(ihl: u8, proto: u8, doff: u8, dport: u16, flags: u8, extra: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ihl_len = usize::from(ihl.max(5)) * 4;
    let mut ip = vec![0u8; ihl_len];
    ip[0] = 0x40 | (ihl & 0x0f);
    ip[9] = proto;
    ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
    f.extend_from_slice(&ip);
    let mut tcp = vec![0u8; 20];
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = doff << 4;
    tcp[13] = flags;
    f.extend_from_slice(&tcp);
    f.extend_from_slice(extra);
    f
}

/// A frame that records the headers the parser asks it for: (offset, bytes).
struct Recorded<'a> {
    bytes: &'a [u8],
    asked: RefCell<Vec<(usize, usize)>>,
}

impl Frame for Recorded<'_> {
    fn header<const N: usize>(&self, offset: usize) -> Option<Header<'_, N>> {
        self.asked.borrow_mut().push((offset, N));
        self.bytes.header::<N>(offset)
    }
}

/// The plain frame takes the one-check read, and its TCP options one more
/// check; a frame off the plain form by one field falls back to the walk
/// (which starts with the Ethernet header alone).
#[test]
fn the_plain_frame_is_read_with_one_check() {
    let shape_of = |f: &[u8]| {
        let recorded = Recorded {
            bytes: f,
            asked: RefCell::new(Vec::new()),
        };
        let shape = shape(&recorded);
        (shape, recorded.asked.into_inner())
    };
    // An ACK with 12 bytes of options (timestamps), as most segments are.
    let plain = frame(5, 6, 8, 80, 0x10, &[0u8; 12]);
    let (got, asked) = shape_of(&plain);
    assert!(matches!(got, Ok(Shape::Transport(..))), "{got:?}");
    assert_eq!(asked, [(0, PLAIN_TCP4), (34, 20), (34 + 32 - 1, 1)]);
    let mut off_plain = Vec::new();
    // IP options; a first fragment; UDP; a VLAN tag.
    off_plain.push(frame(6, 6, 5, 80, 0x10, &[]));
    let mut first_fragment = plain.clone();
    first_fragment[20] = 0x20;
    off_plain.push(first_fragment);
    off_plain.push(frame(5, 17, 5, 53, 0, &[]));
    let mut tagged = plain[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
    tagged.extend_from_slice(&plain[12..]);
    off_plain.push(tagged);
    for f in off_plain {
        let (got, asked) = shape_of(&f);
        assert_eq!(got, walk(&f[..]));
        assert_eq!(
            asked[1],
            (0, 14),
            "walked from the Ethernet header: {asked:?}"
        );
    }
}

/// A frame at or near the plain one (see `shape`): random bytes, then
/// each field its fast read tests set to the plain value (most often) or
/// to a value beside it, so that every test of the fast read is met and
/// missed, and frames of every length up to and past [`PLAIN_TCP4`].
fn near_plain() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<u8>(), 0..120),
        prop_oneof![6 => Just(0x0800u16), 1 => Just(0x8100), 1 => Just(0x86dd), 1 => any::<u16>()],
        prop_oneof![6 => Just(0x45u8), 1 => Just(0x46), 1 => Just(0x44), 1 => Just(0x55), 1 => any::<u8>()],
        prop_oneof![
            6 => Just(0u16),
            3 => Just(0x4000),
            1 => Just(0x2000),
            1 => Just(1),
            1 => Just(0x8000),
            1 => any::<u16>(),
        ],
        prop_oneof![6 => Just(6u8), 1 => Just(17), 1 => Just(1), 1 => any::<u8>()],
        prop_oneof![Just(0x50u8), Just(0x80), Just(0x40), Just(0xf0), any::<u8>()],
        // The IP length: a first fragment's transport ends there.
        prop_oneof![any::<u16>(), 0u16..64],
    )
        .prop_map(|(mut f, ethertype, version_ihl, fragment, proto, doff, length)| {
            let mut set = |at: usize, bytes: &[u8]| {
                if f.len() >= at + bytes.len() {
                    f[at..at + bytes.len()].copy_from_slice(bytes);
                }
            };
            set(12, &ethertype.to_be_bytes());
            set(14, &[version_ihl]);
            set(16, &length.to_be_bytes());
            set(20, &fragment.to_be_bytes());
            set(23, &[proto]);
            set(46, &[doff]);
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// The plain frame's one-check read and the general walk reach the
    /// same shape (or the same error) on every frame.
    #[test]
    fn the_plain_frames_read_agrees_with_the_walk(f in near_plain()) {
        prop_assert_eq!(shape(&f[..]), walk(&f[..]));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&bytes[..]);
    }

    #[test]
    fn ip_frames_with_random_headers_never_panic(
        ethertype in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100), Just(0x88a8)],
        rest in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&rest);
        let _ = parse(&f[..]);
    }

    #[test]
    fn well_formed_tcp_reads_its_fields(
        ihl in 5u8..=15, doff in 5u8..=15, dport: u16, flags: u8,
    ) {
        let options = vec![0u8; usize::from(doff - 5) * 4];
        let f = frame(ihl, 6, doff, dport, flags, &options);
        match parse(&f[..]) {
            Ok(Parsed::Transport(h)) => {
                prop_assert_eq!(h.source.as_v4(), Some([198, 18, 0, 1]));
                let t = h.transport;
                prop_assert!(t.is_tcp());
                prop_assert_eq!((t.dport, t.flags), (dport, flags));
                prop_assert_eq!(usize::from(t.header_len), usize::from(doff) * 4);
            }
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    #[test]
    fn every_prefix_of_a_valid_frame_is_truncated_or_valid(
        ihl in 5u8..=15, doff in 5u8..=15, cut in 0usize..120,
    ) {
        let options = vec![0u8; usize::from(doff - 5) * 4];
        let f = frame(ihl, 6, doff, 80, 0x02, &options);
        let cut = cut.min(f.len());
        let result = parse(&f[..cut]);
        if cut == f.len() {
            prop_assert!(matches!(result, Ok(Parsed::Transport(_))));
        } else {
            prop_assert_eq!(result, Err(ParseError::Truncated));
        }
    }
}

#[test]
fn tcp_flags_map_to_classes() {
    assert_eq!(tcp_class(0x02), class::SYN);
    assert_eq!(tcp_class(0x02 | 0x40 | 0x80), class::SYN); // ECN-setup SYN
    assert_eq!(tcp_class(0x01), class::FIN);
    assert_eq!(tcp_class(0x00), class::NULL);
    assert_eq!(tcp_class(0x29), class::XMAS);
    assert_eq!(tcp_class(0x10), class::ACK);
    assert_eq!(tcp_class(0x11), class::MAIMON); // FIN|ACK (Maimon, or a close)
    assert_eq!(tcp_class(0x12), class::OTHER_TCP); // SYN|ACK
    assert_eq!(tcp_class(0x04), class::OTHER_TCP); // RST
}

#[test]
fn probes_are_told_from_replies() {
    let cfg = Config::default();
    let tcp = |dport, flags| Transport::tcp(1234, dport, flags, 20);
    assert!(is_probe(&tcp(22, 0x02), &cfg));
    assert!(is_probe(&tcp(40000, 0x02), &cfg), "a SYN is never a reply");
    assert!(is_probe(&tcp(80, 0x00), &cfg));
    assert!(!is_probe(&tcp(80, 0x04), &cfg), "RST answers");
    assert!(is_probe(&tcp(80, 0x10), &cfg), "ACK to a service port");
    assert!(
        !is_probe(&tcp(40000, 0x10), &cfg),
        "ACK to an ephemeral port"
    );
    assert!(is_probe(&Transport::udp(1, 53), &cfg));
    assert!(!is_probe(&Transport::udp(53, 50000), &cfg));
}

#[test]
fn accepted_connections_are_told_from_probes() {
    let tcp = |flags| Transport::tcp(40000, 80, flags, 20);
    assert!(is_accepted_traffic(&tcp(0x10), true), "ACK to an open port");
    assert!(
        is_accepted_traffic(&tcp(0x18), true),
        "PSH|ACK to an open port"
    );
    assert!(
        !is_accepted_traffic(&tcp(0x10), false),
        "ACK to a closed port: an ACK probe"
    );
    assert!(!is_accepted_traffic(&tcp(0x12), true), "SYN|ACK is not");
    assert!(!is_accepted_traffic(&tcp(0x02), true), "a SYN is a probe");
    assert!(!is_accepted_traffic(&Transport::udp(1, 80), true));
}

#[test]
fn stealth_and_stack_syns_are_recognised() {
    assert!(is_stealth(class::FIN) && is_stealth(class::NULL) && is_stealth(class::XMAS));
    assert!(!is_stealth(class::SYN) && !is_stealth(class::MAIMON) && !is_stealth(class::ACK));
    let syn = |header_len| Transport::tcp(1, 80, 0x02, header_len);
    assert!(!is_stack_syn(&syn(24)), "nmap -sS: MSS only");
    assert!(!is_stack_syn(&syn(20)), "masscan, hping3: no options");
    assert!(is_stack_syn(&syn(40)), "Linux connect()");
    assert!(is_stack_syn(&syn(32)), "Windows connect()");
    assert!(!is_stack_syn(&Transport::udp(1, 2)));
}

#[test]
fn only_a_clients_probe_earns_benign_credit() {
    // An operating system's SYN and a UDP request to an open port are a
    // client's; a bare raw-packet SYN is what SYN scanners send everywhere.
    assert!(earns_benign_credit(class::SYN, true));
    assert!(!earns_benign_credit(class::SYN, false));
    assert!(earns_benign_credit(class::UDP, false));
    // Stealth and odd TCP probes come from no client.
    assert!(!earns_benign_credit(class::FIN, false));
    assert!(!earns_benign_credit(class::XMAS, false));
    assert!(!earns_benign_credit(class::OTHER_TCP, true));
}
