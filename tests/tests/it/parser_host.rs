//! The shared parser on the host, over the same cases the kernel test runs.

use scanner_common::{Config, Parsed, class_of, is_probe, parse};
use scanner_tests::packets::{Expect, cases};

#[test]
fn every_case_parses_as_expected_on_the_host() {
    for case in cases() {
        let got = parse(&case.frame[..]);
        match (case.expect, got) {
            (
                Expect::Tracked {
                    source,
                    class,
                    proto,
                    dport,
                    probe,
                },
                Ok(Parsed::Transport(h)),
            ) => {
                assert_eq!(h.source, source, "{}", case.name);
                assert_eq!(class_of(&h.transport), class, "{}", case.name);
                let t = h.transport;
                assert_eq!((t.proto, t.dport), (proto, dport), "{}", case.name);
                assert_eq!(
                    is_probe(&h.transport, &Config::default()),
                    probe,
                    "{}",
                    case.name
                );
            }
            (Expect::NotIp, Ok(Parsed::NotIp))
            | (Expect::Untracked, Ok(Parsed::Untracked(_)))
            | (Expect::Fragment, Ok(Parsed::Fragment(_)))
            | (Expect::ParseFailure, Err(_)) => {}
            (want, got) => panic!("{}: expected {want:?}, got {got:?}", case.name),
        }
    }
}

#[test]
fn every_truncation_of_every_case_is_handled() {
    // Cutting a frame anywhere must give a parse error or what the prefix
    // holds, never a panic or an out-of-bounds read.
    for case in cases() {
        for len in 0..=case.frame.len() {
            let _ = parse(&case.frame[..len]);
        }
    }
}
