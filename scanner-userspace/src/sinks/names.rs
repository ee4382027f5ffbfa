//! The names events carry: every value of an enumerated field, each
//! written once (see [`crate::named`]). docs/events.md says what each means.

use crate::{kernel::policy::Origin, named::named};

named! {
    /// The `event` of a [`ScanEvent`](crate::sinks::event::ScanEvent).
    pub(crate) enum ScanName {
        /// The kernel decided a source (or a prefix) is scanning.
        Detected = "scan_detected",
        /// The scan went quiet (or its entry ended): its totals.
        Ended = "scan_ended",
    }
}

named! {
    /// The `event` of an [`InterfaceEvent`](crate::sinks::event::InterfaceEvent).
    pub(crate) enum InterfaceName {
        Attached = "attached",
        Detached = "detached",
    }
}

named! {
    /// The `event` of a [`PolicyEvent`](crate::sinks::event::PolicyEvent).
    pub(crate) enum PolicyName {
        Blocked = "blocked",
        Unblocked = "unblocked",
        BlockRefused = "block_refused",
        Allowlisted = "allowlisted",
        Disallowed = "disallowed",
    }
}

named! {
    /// The `event` of a [`DaemonEvent`](crate::sinks::event::DaemonEvent).
    pub(crate) enum DaemonName {
        Started = "daemon_started",
        Stopped = "daemon_stopped",
        ConfigReloaded = "config_reloaded",
        /// The new file was refused; the old configuration stays.
        ConfigRejected = "config_rejected",
    }
}

named! {
    /// The `event` of a [`PortEvent`](crate::sinks::event::PortEvent).
    pub(crate) enum PortName {
        Opened = "port_opened",
        Closed = "port_closed",
    }
}

named! {
    /// Why the kernel decided: the scan event's `reason`.
    pub(crate) enum DecidedBy {
        /// The sequential test over open and closed ports.
        Trw = "trw",
        /// Distinct ports within the window.
        Fanout = "fanout",
        /// The long memory's walk over days (a slow scan).
        LongMemory = "long_memory",
    }
}

named! {
    /// What the daemon does about a scan: its event's `action`.
    pub(crate) enum Action {
        /// Reported only: blocking is off, or it is a prefix.
        Report = "report",
        Block = "block",
        /// `--dry-run`: it would be blocked.
        DryRun = "dry_run",
        /// It would be blocked, but the source is never blocked.
        Protected = "protected",
    }
}

named! {
    /// A policy event's `reason`.
    pub(crate) enum PolicyReason {
        /// Blocked for its scan.
        Scan = "scan",
        /// By an operator (`scanner block`, `unblock`, `allow`, `disallow`).
        Manual = "manual",
        /// A CrowdSec decision made (or deleted) it.
        Crowdsec = "crowdsec",
        /// The block's TTL ran out.
        Expired = "expired",
        /// Lifted or refused: the address is protected.
        Protected = "protected",
        /// Refused: the block cap is reached.
        Cap = "cap",
        /// Refused: a CrowdSec decision covers an allowlisted address.
        Allowlist = "allowlist",
    }
}

impl From<Origin> for PolicyReason {
    fn from(origin: Origin) -> Self {
        match origin {
            Origin::Scan => Self::Scan,
            Origin::Manual => Self::Manual,
            Origin::Crowdsec => Self::Crowdsec,
        }
    }
}

named! {
    /// Why an interface event happened other than at start and stop.
    pub(crate) enum InterfaceReason {
        /// The interface went away.
        Removed = "removed",
        /// It came back, and the program was attached again.
        Reappeared = "reappeared",
    }
}
