//! Events to a syslog collector (`[signals] syslog`): RFC 5424 messages,
//! one per event, over UDP (one datagram each) or TCP (octet counting,
//! RFC 6587), the JSON line as the message. This is how CrowdSec's
//! `syslog` datasource, rsyslog and SIEMs take logs.
//!
//! Sending never holds the daemon up: events go through a bounded queue
//! to a thread of its own. A full queue, a collector that cannot be
//! reached and a failed send drop the message, counted (`dropped`) and
//! logged once per streak; the thread reconnects with backoff, draining
//! the queue meanwhile, so a dead collector costs nothing but the count.

use std::{
    io::{self, Write as _},
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::sinks::{event::Event, journal::entry::entry, output::Output};

/// The facility of every message: security/authorization (4).
const FACILITY: u8 = 4;
/// The first wait after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between attempts: a collector back is used within this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a TCP connect or send may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stopping daemon waits for the queue to be sent.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// How messages reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// One datagram per message.
    Udp,
    /// One stream, each message prefixed by its length (RFC 6587).
    Tcp,
}

/// Where messages go: `udp://HOST:PORT` or `tcp://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Collector {
    pub(crate) transport: Transport,
    /// `HOST:PORT`, resolved at each connect (a name may move).
    pub(crate) address: String,
}

impl Collector {
    /// Parses a collector URL; the error says what is wrong.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let (transport, rest) = if let Some(rest) = url.strip_prefix("udp://") {
            (Transport::Udp, rest)
        } else if let Some(rest) = url.strip_prefix("tcp://") {
            (Transport::Tcp, rest)
        } else {
            return Err(format!(
                "{url:?}: must be udp://HOST:PORT or tcp://HOST:PORT"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{url:?}: no port (udp://HOST:PORT)"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!("{url:?}: no host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p != 0 => {}
            _ => return Err(format!("{url:?}: the port must be 1 to 65535")),
        }
        Ok(Self {
            transport,
            address: rest.to_owned(),
        })
    }
}

/// What the sender did, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct SyslogStats {
    pub(crate) sent: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// The queue was full (or closed) at the last message: logged once per
    /// streak.
    full: AtomicBool,
    /// The daemon is stopping: what is queued goes out on the link there
    /// is, or is dropped; no new connection is tried.
    stopping: AtomicBool,
}

/// The way into the sender's queue, shared by the event output and the
/// probe signals (`sinks::probes`). Cloned freely: the one sender end sits
/// behind a lock, so the [`Syslog`] that owns the thread closes the queue
/// for every clone when it is dropped.
#[derive(Clone)]
pub(crate) struct Queue {
    tx: Arc<Mutex<Option<SyncSender<Vec<u8>>>>>,
    stats: Arc<SyslogStats>,
    host: Arc<str>,
    pid: u32,
    collector: Arc<str>,
}

impl Queue {
    /// Queues one message: `name` as MSGID, `json` as MSG, at `priority`
    /// (a syslog severity) and `ts`. Never blocks: a full queue or a
    /// closed one drops it, counted, with a log line per streak. Whether
    /// it was queued.
    pub(crate) fn send(&self, priority: u8, ts: &str, name: &str, json: &str) -> bool {
        let line = message(priority, ts, &self.host, self.pid, name, json);
        let sent = match self.tx.lock() {
            Ok(tx) => tx.as_ref().is_some_and(|tx| tx.try_send(line).is_ok()),
            Err(_) => false,
        };
        if sent {
            self.stats.full.store(false, Ordering::Relaxed);
        } else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if !self.stats.full.swap(true, Ordering::Relaxed) {
                tracing::warn!(collector = %self.collector, "syslog queue full or closed: messages dropped (counted in scanner_syslog_dropped)");
            }
        }
        sent
    }

    /// This host's name, as the messages carry it.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }
}

/// The syslog output: formats each event, queues it for the sender.
pub(crate) struct Syslog {
    collector: Collector,
    queue: Queue,
    /// Says when the sender has finished.
    done: Option<Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Syslog {
    /// Starts the sender for `collector`, with room for `queue` messages,
    /// naming this server `host` (the hostname when None).
    pub(crate) fn start(collector: Collector, queue: usize, host: Option<&str>) -> Self {
        let (tx, rx) = sync_channel(queue.max(1));
        let (done_tx, done) = std::sync::mpsc::channel();
        let stats = Arc::new(SyslogStats::default());
        let thread_stats = stats.clone();
        let target = collector.clone();
        let thread = std::thread::Builder::new()
            .name("syslog".into())
            .spawn(move || {
                send_all(&target, &rx, &thread_stats);
                let _ = done_tx.send(());
            })
            .map_err(|e| tracing::error!("cannot start the syslog sender, events to the collector are dropped (counted): {e}"))
            .ok();
        let tx = thread.is_some().then_some(tx);
        tracing::info!(collector = %collector.address, transport = ?collector.transport, "events go to the syslog collector");
        let queue = Queue {
            tx: Arc::new(Mutex::new(tx)),
            stats,
            host: host.map_or_else(hostname, str::to_owned).into(),
            pid: std::process::id(),
            collector: collector.address.as_str().into(),
        };
        Self {
            collector,
            queue,
            done: Some(done),
            thread,
        }
    }

    pub(crate) fn stats(&self) -> Arc<SyslogStats> {
        self.queue.stats.clone()
    }

    /// A way into the queue for other senders (the probe signals).
    pub(crate) fn queue(&self) -> Queue {
        self.queue.clone()
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has sent (or dropped)
        // what is queued, on the link it has: it tries no new connection.
        // A collector that reads too slowly is not waited for past
        // STOP_WAIT: the thread is left to end with the process.
        self.queue.stats.stopping.store(true, Ordering::Relaxed);
        if let Ok(mut tx) = self.queue.tx.lock() {
            *tx = None;
        }
        let finished = self
            .done
            .take()
            .is_some_and(|done| done.recv_timeout(STOP_WAIT).is_ok());
        if let Some(t) = self.thread.take()
            && finished
        {
            let _ = t.join();
        }
    }
}

impl Output for Syslog {
    fn name(&self) -> String {
        format!("the syslog collector {}", self.collector.address)
    }

    fn wants_json(&self) -> bool {
        true
    }

    /// Never fails: what cannot be sent is counted.
    fn write(&mut self, event: &Event, json: &str) -> io::Result<()> {
        let (priority, _, _) = entry(event);
        self.queue.send(priority, event.ts(), event.name(), json);
        Ok(())
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME scanner PROCID MSGID
/// - MSG`, the event's name as MSGID and its JSON line as MSG.
fn message(priority: u8, ts: &str, host: &str, pid: u32, name: &str, json: &str) -> Vec<u8> {
    let pri = u16::from(FACILITY) * 8 + u16::from(priority.min(7));
    let ts = if ts.is_empty() { "-" } else { ts };
    format!("<{pri}>1 {ts} {host} scanner {pid} {name} - {json}").into_bytes()
}

/// This host's name, as RFC 5424 wants it (printable, no spaces); `-`
/// when unknown.
fn hostname() -> String {
    let name: String = crate::sys::hostname()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() { "-".into() } else { name }
}

/// A connection to the collector.
enum Link {
    /// Not connected: a connected UDP socket would fail the next send with
    /// the ICMP error of an earlier one (a collector that was not up yet).
    Udp(UdpSocket, std::net::SocketAddr),
    Tcp(TcpStream),
}

impl Link {
    fn open(c: &Collector) -> io::Result<Self> {
        let addr = c
            .address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        Ok(match c.transport {
            Transport::Udp => {
                let any: std::net::SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                Self::Udp(UdpSocket::bind(any)?, addr)
            }
            Transport::Tcp => {
                let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                s.set_nodelay(true)?;
                Self::Tcp(s)
            }
        })
    }

    fn send(&mut self, message: &[u8]) -> io::Result<()> {
        match self {
            Self::Udp(s, to) => s.send_to(message, *to).map(|_| ()),
            Self::Tcp(s) => {
                // Octet counting: "LEN SP MSG", one write.
                let mut framed = format!("{} ", message.len()).into_bytes();
                framed.extend_from_slice(message);
                s.write_all(&framed)
            }
        }
    }
}

/// The sender's loop: until the queue closes, each message is sent, or
/// dropped and counted while the collector cannot be reached.
fn send_all(c: &Collector, rx: &Receiver<Vec<u8>>, stats: &SyslogStats) {
    let mut link: Option<Link> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut retry_at = Instant::now();
    let mut failing = false;
    loop {
        let message = match rx.recv_timeout(MAX_BACKOFF) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let stopping = stats.stopping.load(Ordering::Relaxed);
        if link.is_none() && !stopping && Instant::now() >= retry_at {
            match Link::open(c) {
                Ok(l) => link = Some(l),
                Err(e) => {
                    if !failing {
                        tracing::warn!(collector = %c.address, "cannot reach the syslog collector, events to it are dropped (counted) until it is back: {e}");
                    }
                    failing = true;
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let sent = match &mut link {
            Some(l) => l.send(&message),
            None => Err(io::ErrorKind::NotConnected.into()),
        };
        match sent {
            Ok(()) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
                if failing {
                    tracing::info!(collector = %c.address, "the syslog collector is reached again");
                }
                failing = false;
                backoff = FIRST_BACKOFF;
            }
            Err(e) => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                // A datagram that could not go (ENOBUFS) loses only itself:
                // UDP has no connection to open again.
                if matches!(link, Some(Link::Udp(..))) {
                    continue;
                }
                if link.take().is_some() {
                    if !failing {
                        tracing::warn!(collector = %c.address, "sending to the syslog collector failed, reconnecting: {e}");
                    }
                    failing = true;
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::json::{self, tests::scan};

    #[test]
    fn urls_parse_and_bad_ones_say_why() {
        assert_eq!(
            Collector::parse("udp://198.18.0.1:514"),
            Ok(Collector {
                transport: Transport::Udp,
                address: "198.18.0.1:514".into()
            })
        );
        let c = Collector::parse("tcp://[2001:db8::1]:6514").unwrap();
        assert_eq!(
            (c.transport, c.address.as_str()),
            (Transport::Tcp, "[2001:db8::1]:6514")
        );
        for (bad, says) in [
            ("198.18.0.1:514", "udp://HOST:PORT"),
            ("http://x:1", "udp://HOST:PORT"),
            ("udp://198.18.0.1", "no port"),
            ("udp://:514", "no host"),
            ("udp://h:0", "1 to 65535"),
            ("tcp://h:99999", "1 to 65535"),
        ] {
            let e = Collector::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn messages_are_rfc5424_with_the_json_line() {
        let event = scan();
        let m = message(
            4,
            "2025-11-25T14:42:17.123Z",
            "web-1",
            7,
            event.name(),
            &json::line(&event),
        );
        let m = String::from_utf8(m).unwrap();
        assert!(
            m.starts_with("<36>1 2025-11-25T14:42:17.123Z web-1 scanner 7 scan_detected - {"),
            "{m}"
        );
        let json: serde_json::Value = serde_json::from_str(m.split_once(" - ").unwrap().1).unwrap();
        assert_eq!(json["source"], "198.18.0.1");
    }
}
