//! `scanner run`: load, attach, then poll -> detect -> report / respond
//! until a signal. [`start`] checks, loads, attaches and catches up;
//! [`serve`] handles the events; [`shutdown`] detaches.

pub(crate) mod crowdsec;
mod enforced;
pub(crate) mod history;
pub(crate) mod interfaces;
mod operator;
pub(crate) mod probes;
pub(crate) mod requests;
pub(crate) mod respond;
mod responder;
mod serve;
mod shutdown;
mod slow;
mod start;
mod upkeep;

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc,
    task::JoinHandle,
};

use crate::{
    config::{launch::Launch, settings::Settings},
    control::server::Call,
    daemon::respond::Output,
    detect::Detector,
    kernel::{
        decisions::Decisions, load::Attached, maps::Maps, pin::PinDir, port_bits::PortBits,
        reported::Reported,
    },
};

pub(crate) async fn run(launch: Launch, to_journal: bool) -> anyhow::Result<()> {
    // Handlers first: a stop asked for while starting waits for the start,
    // then detaches cleanly, instead of killing the daemon half-attached.
    let mut signals = Signals::install()?;
    // A decision waits in the ring buffer until this thread runs: ask to
    // run as soon as it wakes (the threads started later inherit it).
    match crate::sys::request_slice(SLICE) {
        Ok(true) => tracing::debug!("scheduler slice {SLICE:?} asked for"),
        Ok(false) => tracing::debug!("a scheduling policy other than SCHED_OTHER: left as it is"),
        Err(e) => tracing::warn!("asking the scheduler for a {SLICE:?} slice: {e}"),
    }
    let mut daemon = start::start(launch, to_journal).await?;
    let failure = daemon.serve(&mut signals).await?;
    daemon.shutdown(failure).await
}

/// The daemon's scheduler slice (see `sys::request_slice`; the kernel takes
/// 0.1 to 100 ms). A poll that runs longer (a full scan of a million
/// sources) is only cut into more turns.
const SLICE: std::time::Duration = std::time::Duration::from_micros(300);

/// The signals the daemon handles.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }
}

/// When every tracked entry was last read, and what that read found.
#[derive(Default)]
struct FullScans {
    /// Sources tracked, as of the last full scan.
    tracked: usize,
    last: Option<Instant>,
    /// How long until the next one.
    every: Duration,
    /// The ring buffer's dropped records then.
    events_dropped: u64,
    /// CLOCK_MONOTONIC when the last one began.
    last_ns: u64,
}

/// A running daemon: its settings and its parts, each owning its state.
struct Daemon {
    settings: Settings,
    /// The program, its maps and links.
    kernel: Kernel,
    /// Reporter, Responder and the fleet link: where findings go.
    out: Output,
    detector: Detector,
    servers: Servers,
    /// The ports this host exposes and the probes they get.
    ports: PortWatch,
    /// What `scanner status` says of the daemon itself.
    facts: Facts,
    scans: FullScans,
    /// When the allocator's free memory was last handed back.
    heap_released: Instant,
}

/// The XDP program, its maps and the interfaces it is attached to.
struct Kernel {
    /// The host's ephemeral port range (the CONFIG map is made with it).
    ephemeral: (u16, u16),
    pins: PinDir,
    ebpf: aya::Ebpf,
    maps: Maps,
    port_bits: PortBits,
    decisions: Decisions,
    reported: Reported,
    attached: Vec<Attached>,
}

/// The control socket's and the metrics' tasks.
struct Servers {
    calls: mpsc::Receiver<Call>,
    control: JoinHandle<()>,
    metrics: Option<JoinHandle<()>>,
}

/// The listening ports and the probes per port over time.
struct PortWatch {
    /// Probes per port over the last hour.
    last_hour: history::LastHour,
    /// Probes per port into the history's hours.
    port_hours: history::PortHours,
    /// The listening sockets, watched for changes.
    listening: history::Listening,
}

/// The daemon's own figures.
struct Facts {
    started: Instant,
    /// When the pinned counters were created.
    counting_since: Option<SystemTime>,
    /// Detections and blocks taken over from an earlier daemon.
    resumed: (usize, usize),
    /// Kernel memory of the maps, in bytes (memlock), measured at start.
    kernel_memory: u64,
}
