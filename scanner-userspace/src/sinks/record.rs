//! The history record: an event as the history stores it, its JSON line
//! and the fields queries filter on (`scanner history --source/--port`).

use std::time::SystemTime;

use crate::{
    history::{EventRow, Record, writer::Writer},
    sinks::{event::Event, output::Output},
};

/// The event's row.
pub(crate) fn row(event: &Event, json: &str) -> EventRow {
    let (source, kind, proto, port, probed) = match event {
        Event::Scan(e) => (
            Some(e.source.clone()),
            Some(e.kind.as_str().to_owned()),
            None,
            None,
            e.probed.clone(),
        ),
        Event::Policy(e) => (Some(e.source.clone()), None, None, None, Vec::new()),
        Event::Port(e) => (
            None,
            None,
            Some(e.proto.to_string()),
            Some(e.port),
            Vec::new(),
        ),
        Event::Interface(_) | Event::Daemon(_) => (None, None, None, None, Vec::new()),
    };
    EventRow {
        id: 0,
        ts_ms: crate::history::unix_ms(SystemTime::now()),
        event: event.name().to_owned(),
        source,
        kind,
        proto,
        port,
        json: json.to_owned(),
        probed,
    }
}

impl Output for Writer {
    fn name(&self) -> String {
        format!("the history ({})", self.path().display())
    }

    fn wants_json(&self) -> bool {
        true
    }

    /// The history keeps what was said; it is nobody's live feed.
    fn is_read(&self) -> bool {
        false
    }

    fn write(&mut self, event: &Event, json: &str) -> std::io::Result<()> {
        // A writer that falls behind counts and says what it dropped.
        self.send(Record::Event(row(event, json)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_keep_their_ranges_and_ports_their_port() {
        let events = crate::sinks::json::tests::recorded();
        for event in &events {
            let json = crate::sinks::json::line(event);
            let r = row(event, &json);
            assert_eq!(r.event, event.name());
            assert_eq!(r.json, json);
            match event {
                Event::Scan(e) => assert_eq!(r.kind.as_deref(), Some(e.kind.as_str())),
                Event::Port(e) => assert_eq!(r.port, Some(e.port)),
                Event::Policy(e) => assert_eq!(r.source.as_deref(), Some(e.source.as_str())),
                Event::Interface(_) | Event::Daemon(_) => assert!(r.source.is_none()),
            }
        }
    }
}
