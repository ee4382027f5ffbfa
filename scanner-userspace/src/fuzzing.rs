//! The entry points of coverage-guided fuzzing (`scanner-userspace/fuzz`,
//! `cargo xtask fuzz`): one per parser that reads what others wrote. Each
//! takes any bytes and must neither panic nor hang; where a parse succeeds,
//! what the daemon does next with the result runs too. The committed
//! corpora are replayed by this module's test on every `cargo test`, so a
//! crash found once stays fixed.

use std::{collections::BTreeSet, path::PathBuf};

use scanner_common::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

/// A fuzz target: any bytes in, a panic for a bug.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/fuzz_targets/NAME.rs` and
/// `fuzz/corpus/NAME/` name them.
pub const TARGETS: [(&str, Target); 6] = [
    ("control_request", control_request),
    ("config_file", config_file),
    ("lapi_answers", lapi_answers),
    ("proc_files", proc_files),
    ("history_rows", history_rows),
    ("packet", packet),
];

/// A line on the control socket (any local user in the socket's group
/// writes it): parsed, and a request that parses survives being written
/// and read again unchanged.
pub fn control_request(data: &[u8]) {
    if let Ok(request) = crate::control::parse_request(data) {
        let again = serde_json::to_vec(&request).unwrap_or_default();
        assert_eq!(
            crate::control::parse_request(&again).ok(),
            Some(request),
            "a request reads back as itself"
        );
    }
}

/// The configuration file: parsed and checked as `scanner run` does, then
/// the detection's probabilities turned into the kernel's steps.
pub fn config_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = crate::config::FileConfig::parse(&text, "fuzz.toml") {
        let _ = config.probabilities().steps();
        let _ = toml::to_string(&config);
    }
}

/// What a Local API answers: the decision stream (each decision turned
/// into what the bouncer enforces), a login, and a look-up of alerts (the
/// ids they carry).
pub fn lapi_answers(data: &[u8]) {
    if let Ok(stream) = serde_json::from_slice::<crate::fleet::decision::Stream>(data) {
        for d in stream.new.iter().chain(&stream.deleted).flatten() {
            let _ = d.target();
            let _ = crate::fleet::decision::go_duration(&d.duration);
        }
    }
    if let Ok(login) = serde_json::from_slice::<crate::fleet::lapi::Login>(data) {
        let _ = humantime::parse_rfc3339_weak(&login.expire);
    }
    if let Ok(alerts) = serde_json::from_slice::<Vec<serde_json::Value>>(data) {
        for a in &alerts {
            let _ = crate::fleet::tasks::carried_ids(a);
        }
    }
}

/// The kernel's tables the daemon reads: /proc/net/{tcp,tcp6,udp,udp6}
/// (listeners and established peers), /proc/net/sctp/eps, the routes
/// (gateways) and resolv.conf (resolvers): the same text through each.
pub fn proc_files(data: &[u8]) {
    use crate::{
        audit::listeners::{
            TCP_ESTABLISHED, TCP_LISTEN, open_ports, parse_peers, parse_proc_net, parse_sctp_eps,
        },
        kernel::protect::{parse_ipv6_route, parse_resolv_conf, parse_route},
    };
    let text = String::from_utf8_lossy(data);
    let mut listeners = parse_proc_net(&text, IPPROTO_TCP, TCP_LISTEN);
    listeners.extend(parse_proc_net(&text, IPPROTO_UDP, 0x07));
    listeners.extend(parse_sctp_eps(&text));
    let open: BTreeSet<(u8, u16)> = open_ports(&listeners);
    assert!(
        open.iter()
            .all(|(p, _)| [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP].contains(p))
    );
    for l in &listeners {
        let _ = (l.families(), l.is_exposed());
    }
    let _ = parse_peers(&text, TCP_ESTABLISHED);
    let _ = parse_route(&text);
    let _ = parse_ipv6_route(&text);
    let _ = parse_resolv_conf(&text);
}

/// A damaged history file: rows of any value in every table (one a line,
/// its first byte the table: `e` events, `h` port hours, `p` scan ports,
/// `l` listening, `s` port snapshots; fields separated by tabs, stored as
/// the text they are, so a number may be text), then everything that
/// reads the file: `scanner history`'s rows, `scanner report` (JSON and
/// HTML), the snapshots a starting daemon takes back.
pub fn history_rows(data: &[u8]) {
    let path = scratch_file();
    let _ = std::fs::remove_file(&path);
    if let Err(e) = crate::history::Store::open(&path) {
        panic!("creating {}: {e:#}", path.display());
    }
    if let Err(e) = write_rows(&path, data) {
        // Only the set-up may fail here, never the fuzz input.
        panic!("writing into {}: {e}", path.display());
    }
    let Ok(store) = crate::history::Store::open_read_only(&path) else {
        return;
    };
    let now_ms = 1_800_000_000_000;
    if let Ok(report) = crate::history::report::build(&store, 0, now_ms) {
        let _ = serde_json::to_string(&report);
        let _ = crate::history::report::render(&report);
    }
    if let Ok(events) = store.events(0) {
        for e in &events {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&e.json) {
                let _ = crate::cli::history::row(&v);
            }
        }
    }
    let _ = store.port_hours(0);
    let _ = store.listening();
    let _ = store.scans_probing(0, 22);
    for counts in ["", "x", "boot-1"] {
        let _ = store.snapshots(counts, 0);
    }
}

/// A file of this process's own, in memory where /dev/shm exists.
fn scratch_file() -> PathBuf {
    let dir = std::path::Path::new("/dev/shm");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("scanner-fuzz-history-{}.db", std::process::id()))
}

/// `data`'s rows written as they are into the history file the store made.
fn write_rows(path: &std::path::Path, data: &[u8]) -> rusqlite::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    let tx = conn.unchecked_transaction()?;
    for line in data.split(|&b| b == b'\n').take(64) {
        let Some((&table, rest)) = line.split_first() else {
            continue;
        };
        let fields: Vec<String> = rest
            .split(|&b| b == b'\t')
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        let field = |i: usize| fields.get(i).cloned().unwrap_or_default();
        let sql = match table {
            b'e' => {
                "INSERT INTO events (ts_ms, event, source, kind, proto, port, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            }
            b'h' => {
                "INSERT OR REPLACE INTO port_hours (hour_s, proto, port, probes, sources) VALUES (?1, ?2, ?3, ?4, ?5)"
            }
            b'p' => "INSERT INTO scan_ports (event_id, proto, first, last) VALUES (?1, ?2, ?3, ?4)",
            b'l' => {
                "INSERT OR REPLACE INTO listening (proto, port, address, json) VALUES (?1, ?2, ?3, ?4)"
            }
            b's' => {
                "INSERT OR REPLACE INTO port_snapshots (taken_ms, counts, data) VALUES (?1, ?2, CAST(?3 AS BLOB))"
            }
            _ => continue,
        };
        let mut stmt = tx.prepare_cached(sql)?;
        let n = stmt.parameter_count();
        let values: Vec<String> = (0..n).map(field).collect();
        // A row the schema refuses (NOT NULL, a key twice) is no damage
        // the readers could meet: skipped.
        let _ = stmt.execute(rusqlite::params_from_iter(values.iter()));
    }
    tx.commit()
}

/// A frame, through the parser the XDP program runs (built for the host).
/// The plain frame's fast read and the general walk must agree on it.
pub fn packet(data: &[u8]) {
    let _ = scanner_common::parse::parse(data);
    assert_eq!(
        scanner_common::parse::shape(data),
        scanner_common::parse::walk(data),
        "the plain frame's read and the general walk disagree"
    );
    let _ = scanner_common::parse::destination(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of every committed corpus, through its target: a crash
    /// found once stays fixed.
    #[test]
    fn the_committed_corpora_replay_cleanly() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "{name} has no corpus");
            for f in files {
                let data = std::fs::read(&f).unwrap();
                target(&data);
            }
        }
    }

    #[test]
    fn every_target_has_its_fuzz_target_file() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
        for (name, _) in TARGETS {
            let text = std::fs::read_to_string(root.join(format!("{name}.rs"))).unwrap();
            assert!(
                text.contains(&format!("fuzzing::{name}(")),
                "fuzz_targets/{name}.rs calls its target"
            );
        }
    }
}
