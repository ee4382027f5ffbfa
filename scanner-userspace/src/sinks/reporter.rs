//! The Reporter: every event goes to the history and to each output
//! (stdout, the journal, the events file), and the latest are kept for
//! `scanner top`. An output that fails is dropped, said once in the log:
//! a closed stdout or a journal gone away never stops detection.

use std::collections::VecDeque;

use crate::{
    history::writer::Writer,
    sinks::{
        event::Event,
        json,
        output::{OpenError, Output},
    },
};

/// Events kept for `scanner top`.
pub(crate) const RECENT_EVENTS: usize = 50;

/// Writes every event to the history and each output.
pub(crate) struct Reporter {
    /// In the order they are written to.
    outputs: Vec<Box<dyn Output>>,
    /// Every event also goes into the history, when it is kept; the
    /// daemon writes its other records there too.
    history: Option<Writer>,
    /// The latest events, for `scanner top`.
    recent: VecDeque<Event>,
}

impl Reporter {
    pub(crate) fn new(history: Option<Writer>) -> Self {
        Self {
            outputs: Vec::new(),
            history,
            recent: VecDeque::with_capacity(RECENT_EVENTS),
        }
    }

    /// Also writes every event to `output` (after those added before).
    pub(crate) fn with(mut self, output: Option<impl Output + 'static>) -> Self {
        if let Some(output) = output {
            self.outputs.push(Box::new(output));
        }
        self
    }

    /// The history writer, when history is kept.
    pub(crate) fn history(&self) -> Option<&Writer> {
        self.history.as_ref()
    }

    /// Opens every output's file again; what failed is returned and the
    /// old file kept.
    pub(crate) fn reopen(&mut self) -> Result<(), OpenError> {
        for output in &mut self.outputs {
            output.reopen()?;
        }
        Ok(())
    }

    /// The latest events, oldest first.
    pub(crate) fn recent(&self) -> impl Iterator<Item = &Event> {
        self.recent.iter()
    }

    /// Whether events still reach anyone as they happen.
    pub(crate) fn has_sink(&self) -> bool {
        self.outputs.iter().any(|o| o.is_read())
    }

    /// Records `event` for `scanner top` and writes it everywhere.
    pub(crate) fn emit(&mut self, event: &Event) {
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(event.clone());
        let wanted = self.history.is_some() || self.outputs.iter().any(|o| o.wants_json());
        let json = if wanted {
            json::line(event)
        } else {
            String::new()
        };
        if let Some(history) = &mut self.history {
            let _ = Output::write(history, event, &json);
        }
        let mut i = 0;
        while i < self.outputs.len() {
            match self.outputs[i].write(event, &json) {
                Ok(()) => i += 1,
                Err(e) => {
                    let gone = self.outputs.remove(i);
                    let left: Vec<String> = self.outputs.iter().map(|o| o.name()).collect();
                    let also = if left.is_empty() {
                        "no event sink is left".to_owned()
                    } else {
                        format!("events go to {} only", left.join(" and "))
                    };
                    tracing::error!("writing events to {} failed ({e}): {also}", gone.name());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::sinks::{
        json::tests::scan,
        stdout::{EventFormat, Stdout},
    };

    /// A writer whose reader has gone, like a closed pipe.
    struct Closed;

    impl io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stdout_is_dropped_and_events_still_recorded() {
        let mut r = Reporter::new(None).with(Some(Stdout::new(EventFormat::Json, Closed)));
        assert!(r.has_sink());
        r.emit(&scan());
        assert!(!r.has_sink(), "the closed stdout is gone");
        r.emit(&scan());
        assert_eq!(r.recent().count(), 2, "scanner top still sees them");
    }

    #[test]
    fn only_the_latest_events_are_kept() {
        let mut r = Reporter::new(None);
        for _ in 0..RECENT_EVENTS + 5 {
            r.emit(&scan());
        }
        assert_eq!(r.recent().count(), RECENT_EVENTS);
        assert!(!r.has_sink(), "no output was added");
    }
}
