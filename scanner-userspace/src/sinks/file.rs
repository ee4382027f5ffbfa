//! `--events-file`: every event as one JSON line appended to a file, for log
//! shippers. The file is opened again on SIGHUP, so logrotate can move it
//! away and signal (`systemctl reload scanner`): lines written before the
//! signal are in the moved file, lines after it in the new one, none lost.

use std::{
    fs::File,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use crate::sinks::{
    event::Event,
    output::{OpenError, Output},
};

/// Readable by root and the file's group (the unit runs with group
/// `scanner`), not by everyone: events name who probed what.
const MODE: u32 = 0o640;

/// The events file, open for appending.
#[derive(Debug)]
pub(crate) struct EventsFile {
    path: PathBuf,
    file: File,
    /// A write failed and was logged; the next success is logged too.
    failing: bool,
}

impl EventsFile {
    pub(crate) fn open(path: &Path) -> Result<Self, OpenError> {
        Ok(Self {
            path: path.to_path_buf(),
            file: open(path)?,
            failing: false,
        })
    }

    /// Opens the path again (after a rotation moved the file away). On
    /// failure the old file stays in use and nothing is lost.
    pub(crate) fn reopen(&mut self) -> Result<(), OpenError> {
        self.file = open(&self.path)?;
        Ok(())
    }

    /// Appends one line (one write(2), so concurrent readers never see half
    /// a line). A failure (a full disk) is logged once per streak and the
    /// file kept: the next event tries again.
    pub(crate) fn append(&mut self, line: &[u8]) {
        match self.file.write_all(line) {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::warn!(path = %self.path.display(), "writing the events file works again");
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::error!(path = %self.path.display(), "writing the events file failed, events still go to the other sinks: {e}");
            }
            Err(_) => {}
        }
    }
}

impl Output for EventsFile {
    fn name(&self) -> String {
        format!("the events file {}", self.path.display())
    }

    fn wants_json(&self) -> bool {
        true
    }

    /// Never dropped: a failing write is logged, and the next event tries
    /// again (a full disk frees up).
    fn write(&mut self, _: &Event, json: &str) -> io::Result<()> {
        self.append(format!("{json}\n").as_bytes());
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), OpenError> {
        EventsFile::reopen(self)
    }
}

fn open(path: &Path) -> Result<File, OpenError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(MODE)
        .open(path)
        .map_err(|source| OpenError::new(path, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_rotation_followed_by_a_reopen_loses_no_line() {
        let dir = std::env::temp_dir().join(format!("scanner-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        std::fs::write(&path, "{\"old\":0}\n").unwrap();
        let mut file = EventsFile::open(&path).unwrap();
        file.append(b"{\"n\":1}\n");
        // logrotate renames the file; the daemon writes on until signalled.
        let rotated = dir.join("events.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        file.append(b"{\"n\":2}\n");
        file.reopen().unwrap();
        file.append(b"{\"n\":3}\n");
        assert_eq!(lines(&rotated), ["{\"old\":0}", "{\"n\":1}", "{\"n\":2}"]);
        assert_eq!(lines(&path), ["{\"n\":3}"]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "not readable by everyone: {mode:o}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_reopen_keeps_the_open_file() {
        let dir = std::env::temp_dir().join(format!("scanner-events-gone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let mut file = EventsFile::open(&path).unwrap();
        let moved = dir.join("moved.jsonl");
        std::fs::rename(&path, &moved).unwrap();
        std::fs::create_dir(&path).unwrap();
        let err = file.reopen().unwrap_err();
        assert!(err.to_string().contains("events.jsonl"), "{err}");
        file.append(b"{\"n\":1}\n");
        assert_eq!(lines(&moved), ["{\"n\":1}"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_named() {
        let err = EventsFile::open(Path::new("/nonexistent-dir/events.jsonl")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-dir/events.jsonl"),
            "{err}"
        );
    }
}
