//! Events on stdout: the text line or the JSON line, one per event,
//! flushed at once so a reader sees a detection the moment it is made.

use std::io::{self, Write};

use crate::sinks::{event::Event, output::Output, text};

crate::named::named! {
    /// How events are written on stdout: human text, or one JSON object per line.
    pub(crate) enum EventFormat {
        Text = "text",
        Json = "json",
    }
}

/// Standard output (or any writer, in tests).
pub(crate) struct Stdout<W: Write> {
    format: EventFormat,
    out: W,
}

impl<W: Write> Stdout<W> {
    pub(crate) fn new(format: EventFormat, out: W) -> Self {
        Self { format, out }
    }
}

impl<W: Write> Output for Stdout<W> {
    fn name(&self) -> String {
        "stdout".to_owned()
    }

    fn wants_json(&self) -> bool {
        self.format == EventFormat::Json
    }

    fn write(&mut self, event: &Event, json: &str) -> io::Result<()> {
        match self.format {
            EventFormat::Json => writeln!(self.out, "{json}")?,
            EventFormat::Text => writeln!(self.out, "{}", text::line(event))?,
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::json::{self, tests::scan};

    fn written(format: EventFormat) -> String {
        let mut out = Stdout::new(format, Vec::new());
        let event = scan();
        out.write(&event, &json::line(&event)).unwrap();
        String::from_utf8(out.out).unwrap()
    }

    #[test]
    fn one_line_per_event_in_either_format() {
        let json = written(EventFormat::Json);
        assert!(json.ends_with('\n') && json.lines().count() == 1);
        assert_eq!(json.trim_end(), json::line(&scan()));
        let text = written(EventFormat::Text);
        assert_eq!(text.trim_end(), text::line(&scan()));
        assert!(text.ends_with('\n') && text.lines().count() == 1);
    }
}
