//! The systemd journal's native protocol: one datagram per entry, fields as
//! `NAME=value` lines (a value with a newline in it goes length-prefixed).
//! Events go here with their own fields (`SCANNER_*`), so
//! `journalctl -t scanner SCANNER_SOURCE=198.18.0.1` finds them; [`entry`]
//! makes an event's.

pub(crate) mod entry;

use std::{
    io,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
};

/// Where journald listens for native entries.
pub(crate) const SOCKET: &str = "/run/systemd/journal/socket";

crate::named::named! {
    /// Where logs (and events besides stdout) go: the systemd journal, stderr,
    /// or auto (the journal when its socket exists).
    pub(crate) enum LogTarget {
        Auto = "auto",
        Journal = "journal",
        Stderr = "stderr",
    }
}

/// The socket to use: `$SCANNER_JOURNAL_SOCKET` (containers, tests), else
/// journald's own.
pub(crate) fn socket_path() -> PathBuf {
    std::env::var_os("SCANNER_JOURNAL_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SOCKET))
}

/// Every entry names the tool, so `journalctl -t scanner` selects them.
pub(crate) const IDENTIFIER: &str = "scanner";

/// syslog priorities the events use.
pub(crate) mod priority {
    pub(crate) const ERR: u8 = 3;
    pub(crate) const WARNING: u8 = 4;
    pub(crate) const NOTICE: u8 = 5;
    pub(crate) const INFO: u8 = 6;
}

/// Resolves `--log`: true when logs and events go to the journal. A socket
/// file nobody listens on (journald stopped) counts as no journal.
pub(crate) fn wanted(target: LogTarget, socket: &Path) -> Result<bool, JournalError> {
    let listening = || UnixDatagram::unbound().and_then(|s| s.connect(socket));
    match target {
        LogTarget::Stderr => Ok(false),
        LogTarget::Auto => Ok(listening().is_ok()),
        LogTarget::Journal => match listening() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(JournalError::NoSocket(socket.to_owned()))
            }
            Err(e) => Err(JournalError::NotListening(socket.to_owned(), e)),
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum JournalError {
    #[error(
        "--log journal: no journal socket at {0} (is systemd-journald running? use --log stderr)"
    )]
    NoSocket(PathBuf),
    #[error("--log journal: nobody listens on {0} (is systemd-journald running? use --log stderr)")]
    NotListening(PathBuf, #[source] io::Error),
}

/// A connection to journald.
#[derive(Debug)]
pub(crate) struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Journal {
    pub(crate) fn connect(path: &Path) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Self {
            socket,
            path: path.to_owned(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one entry: MESSAGE, PRIORITY and SYSLOG_IDENTIFIER, then `fields`.
    pub(crate) fn send(
        &self,
        priority: u8,
        message: &str,
        fields: &[(&str, String)],
    ) -> io::Result<()> {
        let datagram = encode(priority, message, fields);
        self.socket.send(&datagram).map(|_| ())
    }
}

/// The datagram for one entry.
pub(crate) fn encode(priority: u8, message: &str, fields: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    field(&mut out, "MESSAGE", message);
    field(&mut out, "PRIORITY", &priority.to_string());
    field(&mut out, "SYSLOG_IDENTIFIER", IDENTIFIER);
    for (name, value) in fields {
        field(&mut out, name, value);
    }
    out
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    debug_assert!(valid_name(name), "journal field name {name:?}");
    out.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

/// journald keeps fields named with A-Z, 0-9 and `_`, not starting with `_`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('_')
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_fields_are_lines() {
        let d = encode(4, "scan", &[("SCANNER_SOURCE", "198.18.0.1".into())]);
        assert_eq!(
            String::from_utf8(d).unwrap_or_default(),
            "MESSAGE=scan\nPRIORITY=4\nSYSLOG_IDENTIFIER=scanner\nSCANNER_SOURCE=198.18.0.1\n"
        );
    }

    #[test]
    fn multi_line_values_are_length_prefixed() {
        let d = encode(3, "a\nb", &[]);
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\nPRIORITY=3\nSYSLOG_IDENTIFIER=scanner\n");
        assert_eq!(d, want);
    }

    #[test]
    fn auto_uses_the_journal_only_when_it_listens() {
        let missing = Path::new("/nonexistent/journal/socket");
        assert!(!wanted(LogTarget::Auto, missing).unwrap());
        assert!(wanted(LogTarget::Journal, missing).is_err());
        let dir = std::env::temp_dir().join(format!("scanner-wanted-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        assert!(wanted(LogTarget::Auto, &path).unwrap());
        assert!(!wanted(LogTarget::Stderr, &path).unwrap());
        // journald gone, its socket file left behind: no journal.
        drop(listener);
        assert!(path.exists());
        assert!(!wanted(LogTarget::Auto, &path).unwrap());
        assert!(matches!(
            wanted(LogTarget::Journal, &path),
            Err(JournalError::NotListening(..))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_follow_journald_rules() {
        assert!(valid_name("SCANNER_TOP_PORTS"));
        assert!(!valid_name("_PID"));
        assert!(!valid_name("scanner_source"));
        assert!(!valid_name(""));
    }

    #[test]
    fn a_datagram_reaches_a_listening_socket() {
        let dir = std::env::temp_dir().join(format!("scanner-journal-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let journal = Journal::connect(&path).unwrap();
        journal
            .send(5, "blocked", &[("SCANNER_ACTION", "block".into())])
            .unwrap();
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.contains("SCANNER_ACTION=block\n"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
