//! What the Reporter writes to: an [`Output`] takes each event in a format
//! of its own (stdout, the journal, the events file, the history).

use std::{
    io,
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::sinks::event::Event;

#[derive(Debug, Error)]
#[error("cannot open the events file {path}")]
pub(crate) struct OpenError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl OpenError {
    pub(crate) fn new(path: &Path, source: io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Somewhere events are written, in a format of its own.
pub(crate) trait Output {
    /// What it is, for the log: `stdout`, `the journal`.
    fn name(&self) -> String;

    /// Whether it writes the event's JSON line (made once for all).
    fn wants_json(&self) -> bool;

    /// Whether someone reads it as events happen. The daemon stops when
    /// no such output is left and it has nothing else to do.
    fn is_read(&self) -> bool {
        true
    }

    /// Writes one event (`json`: its JSON line when one is wanted). An
    /// error drops the output.
    fn write(&mut self, event: &Event, json: &str) -> std::io::Result<()>;

    /// Opens its file again (SIGHUP, after a rotation).
    fn reopen(&mut self) -> Result<(), OpenError> {
        Ok(())
    }
}
