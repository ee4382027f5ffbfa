//! `scanner top`: a live terminal dashboard fed by the daemon's control
//! socket. Keys: up/down select a source, `b` blocks it, `u` unblocks it,
//! `q` quits.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Paragraph, Row, Table, TableState},
};

use crate::{
    audit::proto_name,
    cli::{
        TopArgs,
        commands::{interfaces, or_dash, port_hits},
    },
    control::{
        Request, ask, call,
        reply::{ListRow, ListState, StatusReply},
    },
    detect::hits::PortHit,
    sinks::event::Event as Reported,
};

/// What one refresh read from the daemon.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub status: StatusReply,
    /// `scanner list` rows: suspects, detections and blocks, worst first.
    pub sources: Vec<ListRow>,
    pub ports: Vec<PortHit>,
    pub events: Vec<Reported>,
    /// Packets per second seen and dropped since the previous refresh.
    pub rates: (f64, f64),
}

/// The dashboard's state between frames.
#[derive(Debug, Default)]
pub(crate) struct App {
    pub snapshot: Snapshot,
    pub table: TableState,
    /// The last thing a key did (or failed to do).
    pub message: String,
}

impl App {
    /// The address of the selected source.
    pub(crate) fn selected(&self) -> Option<String> {
        let row = self.snapshot.sources.get(self.table.selected()?)?;
        Some(row.address.clone())
    }

    /// A new snapshot; the highlight stays on the source it was on (rows
    /// re-sort by score), or on the same row when that source is gone.
    fn refresh(&mut self, snapshot: Snapshot) {
        let was = self.selected();
        self.snapshot = snapshot;
        if let Some(at) =
            was.and_then(|a| self.snapshot.sources.iter().position(|r| r.address == a))
        {
            self.table.select(Some(at));
        }
        self.select(0);
    }

    fn select(&mut self, step: isize) {
        let n = self.snapshot.sources.len();
        if n == 0 {
            self.table.select(None);
            return;
        }
        let at = self.table.selected().unwrap_or(0) as isize + step;
        self.table
            .select(Some(at.clamp(0, n as isize - 1) as usize));
    }
}

pub(crate) fn run(args: &TopArgs) -> anyhow::Result<()> {
    let socket = &args.client.socket;
    // Fail before touching the terminal when the daemon is not there.
    let mut last = fetch(args, None).context("reading the daemon")?;
    let mut app = App::default();
    let mut terminal = ratatui::try_init().context("opening the terminal")?;
    let result = (|| -> anyhow::Result<()> {
        let mut taken = Instant::now();
        app.refresh(last.clone());
        loop {
            terminal.draw(|f| draw(f, &mut app))?;
            let wait = args.interval.saturating_sub(taken.elapsed());
            if event::poll(wait)? {
                if let Event::Key(k) = event::read()?
                    && k.kind == KeyEventKind::Press
                {
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Up | KeyCode::Char('k') => app.select(-1),
                        KeyCode::Down | KeyCode::Char('j') => app.select(1),
                        KeyCode::Char('b') => act(&mut app, socket, true),
                        KeyCode::Char('u') => act(&mut app, socket, false),
                        _ => {}
                    }
                }
                continue;
            }
            let elapsed = taken.elapsed();
            taken = Instant::now();
            match fetch(args, Some((&last, elapsed))) {
                Ok(s) => {
                    last = s.clone();
                    app.refresh(s);
                }
                Err(e) => app.message = format!("daemon: {e:#}"),
            }
        }
    })();
    ratatui::restore();
    result
}

/// Blocks or unblocks the selected source through the daemon.
fn act(app: &mut App, socket: &std::path::Path, block: bool) {
    let Some(target) = app.selected() else {
        app.message = "no source selected".into();
        return;
    };
    let request = if block {
        Request::Block {
            target: target.clone(),
            ttl: None,
            force: false,
        }
    } else {
        Request::Unblock {
            target: target.clone(),
        }
    };
    app.message = match call(socket, &request) {
        Ok(_) if block => format!("blocked {target}"),
        Ok(_) => format!("unblocked {target}"),
        Err(e) => format!("{target}: {e}"),
    };
}

fn fetch(args: &TopArgs, previous: Option<(&Snapshot, Duration)>) -> anyhow::Result<Snapshot> {
    let socket = &args.client.socket;
    let status: StatusReply = ask(socket, &Request::Status {})?;
    let sources: Vec<ListRow> = ask(socket, &Request::List {})?;
    let events: Vec<Reported> = ask(socket, &Request::Events {})?;
    let ports = port_hits(&args.client, Some(12))?;
    let rates = previous.map_or((0.0, 0.0), |(p, dt)| {
        let per_s =
            |now: u64, before: u64| now.saturating_sub(before) as f64 / dt.as_secs_f64().max(1e-3);
        let (now, before) = (&status.packets, &p.status.packets);
        (
            per_s(now.seen, before.seen),
            per_s(now.dropped, before.dropped),
        )
    });
    Ok(Snapshot {
        status,
        sources,
        ports,
        events,
        rates,
    })
}

/// Seconds until an RFC 3339 time, e.g. a block's expiry.
fn seconds_left(at: Option<&str>) -> String {
    let Some(t) = at.and_then(|s| humantime::parse_rfc3339(s).ok()) else {
        return "-".into();
    };
    let left = t.duration_since(SystemTime::now()).unwrap_or_default();
    humantime::format_duration(Duration::from_secs(left.as_secs())).to_string()
}

/// One line per event: time, what, who.
fn event_line(e: &Reported) -> String {
    let (who, kind) = match e {
        Reported::Scan(e) => (e.source.as_str(), Some(e.kind)),
        Reported::Policy(e) => (e.source.as_str(), None),
        Reported::Interface(e) => (e.iface.as_str(), None),
        Reported::Daemon(e) => (e.detail.as_str(), None),
        Reported::Port(_) => ("", None),
    };
    let ts = e.ts();
    let time = ts.get(11..19).unwrap_or(ts);
    let kind = kind.map(|k| format!(" {k}")).unwrap_or_default();
    format!("{time} {} {who}{kind}", e.name())
}

pub(crate) fn draw(f: &mut Frame, app: &mut App) {
    let s = &app.snapshot;
    let [head, middle, bottom, keys] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(8),
        Constraint::Length(10),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let summary = summary(s);
    f.render_widget(
        Paragraph::new(summary).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" scanner top "),
        ),
        head,
    );

    let [left, right] =
        Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(middle);
    let sources = sources_table(s);
    f.render_stateful_widget(sources, left, &mut app.table);

    let ports = ports_table(s);
    f.render_widget(ports, right);

    let [events, blocks] =
        Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(bottom);
    let lines = event_lines(s);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" recent events "),
        ),
        events,
    );
    let blocked = block_lines(s);
    f.render_widget(
        Paragraph::new(blocked).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" active blocks "),
        ),
        blocks,
    );
    let help = format!(
        "up/down select  b block  u unblock  q quit   score: evidence of scanning (closed ports raise it, open ones lower it)   {}",
        app.message
    );
    f.render_widget(Paragraph::new(help), keys);
}

/// The header line: rates, counts, interfaces, uptime.
fn summary(s: &Snapshot) -> String {
    // "11m", "1h 2m": seconds only for the first minute.
    let t = s.status.uptime_s;
    let t = if t >= 60 { t - t % 60 } else { t };
    let uptime = humantime::format_duration(std::time::Duration::from_secs(t)).to_string();
    // Active scans: detected and not yet ended (the rows also list ended
    // and blocked ones, by state).
    format!(
        "{:.0} pkt/s seen  {:.0} pkt/s dropped  |  sources {}  scans active {}  blocks {}  |  {}  up {uptime}",
        s.rates.0,
        s.rates.1,
        s.status.sources_tracked,
        s.status.active_detections,
        s.status.blocks,
        interfaces(&s.status),
    )
}

/// The sources, worst first.
fn sources_table(s: &Snapshot) -> Table<'static> {
    let rows = s.sources.iter().map(|e| {
        Row::new(vec![
            e.address.clone(),
            e.state.to_string(),
            or_dash(e.kind),
            or_dash(e.score),
            or_dash(e.ports),
            or_dash(e.probes),
        ])
    });
    Table::new(
        rows,
        [
            Constraint::Min(18),
            Constraint::Length(9),
            Constraint::Length(11),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(7),
        ],
    )
    .header(
        Row::new(["source", "state", "kind", "score", "ports", "probes"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(" top sources "),
    )
}

/// The most probed ports.
fn ports_table(s: &Snapshot) -> Table<'static> {
    let ports = s.ports.iter().map(|p| {
        Row::new(vec![
            format!("{}/{}", proto_name(p.proto), p.port),
            if p.open {
                "OPEN".into()
            } else {
                "closed".into()
            },
            p.probes.to_string(),
            p.sources.to_string(),
        ])
    });
    Table::new(
        ports,
        [
            Constraint::Min(10),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(7),
        ],
    )
    .header(
        Row::new(["port", "state", "probes", "sources"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(" most probed ports "),
    )
}

/// The latest events, newest first.
fn event_lines(s: &Snapshot) -> Vec<Line<'static>> {
    s.events
        .iter()
        .rev()
        .take(8)
        .map(|e| Line::from(event_line(e)))
        .collect()
}

/// The blocks in force and how long each has left.
fn block_lines(s: &Snapshot) -> Vec<Line<'static>> {
    s.sources
        .iter()
        .filter(|e| e.state == ListState::Blocked)
        .take(8)
        .map(|e| {
            Line::from(format!(
                "{}  {} left",
                e.address,
                seconds_left(e.block_expires.as_deref())
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::sinks::json::tests::scan;

    /// A `scanner list` row with nothing but its address.
    fn row(address: &str) -> ListRow {
        ListRow::bare(address.into(), ListState::Watching)
    }

    fn screen(app: &mut App) -> String {
        let mut t = Terminal::new(TestBackend::new(120, 30)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_dashboard_shows_sources_ports_events_and_blocks() {
        let expires = humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(600));
        let mut app = App {
            snapshot: Snapshot {
                status: StatusReply {
                    interfaces: vec![crate::control::reply::InterfaceStatus {
                        iface: "veth-srv".into(),
                        mode: crate::control::reply::IfaceMode::Native,
                    }],
                    sources_tracked: 3,
                    active_detections: 1,
                    blocks: 1,
                    uptime_s: 42,
                    ..StatusReply::default()
                },
                sources: vec![ListRow {
                    state: ListState::Blocked,
                    kind: Some(crate::detect::ScanKind::Syn),
                    score: Some(9000),
                    ports: Some(1000),
                    probes: Some(1000),
                    block_expires: Some(expires.to_string()),
                    ..row("198.18.0.1")
                }],
                ports: vec![PortHit {
                    proto: 6,
                    port: 22,
                    probes: 7,
                    sources: 2,
                    open: true,
                    ..PortHit::default()
                }],
                events: vec![scan()],
                rates: (1500.0, 20.0),
            },
            ..App::default()
        };
        app.select(0);
        assert_eq!(app.selected().as_deref(), Some("198.18.0.1"));
        let s = screen(&mut app);
        assert!(s.contains("1500 pkt/s seen"), "{s}");
        assert!(s.contains("veth-srv (native)"), "{s}");
        assert!(s.contains("198.18.0.1") && s.contains("blocked"), "{s}");
        assert!(s.contains("tcp/22") && s.contains("OPEN"), "{s}");
        assert!(s.contains("14:42:17 scan_detected 198.18.0.1 syn"), "{s}");
        for event in crate::sinks::json::tests::recorded() {
            assert!(event_line(&event).contains(event.name()));
        }
        assert!(s.contains("left"), "{s}");
    }

    #[test]
    fn selection_stays_within_the_rows() {
        let mut app = App::default();
        app.select(1);
        assert_eq!(app.selected(), None);
        app.snapshot.sources = vec![row("a"), row("b")];
        app.select(5);
        assert_eq!(app.selected().as_deref(), Some("b"));
        app.select(-9);
        assert_eq!(app.selected().as_deref(), Some("a"));
    }

    /// Rows re-sort by score between refreshes: `b` must block the source
    /// the operator chose, not whatever moved into its row.
    #[test]
    fn the_highlight_follows_its_source_when_rows_re_sort() {
        let rows = |names: &[&str]| Snapshot {
            sources: names.iter().map(|a| row(a)).collect(),
            ..Snapshot::default()
        };
        let mut app = App::default();
        app.refresh(rows(&["a", "b", "c"]));
        app.select(1);
        assert_eq!(app.selected().as_deref(), Some("b"));
        app.refresh(rows(&["c", "a", "b"]));
        assert_eq!(app.selected().as_deref(), Some("b"));
        // Gone: the same row, clamped.
        app.refresh(rows(&["c"]));
        assert_eq!(app.selected().as_deref(), Some("c"));
    }
}
