//! Where events go: the event model and its formats on stdout, a JSON
//! lines file, the systemd journal, Prometheus metrics, and systemd's readiness notifications.

pub(crate) mod events;
pub(crate) mod file;
pub(crate) mod journal;
pub(crate) mod metrics;
pub(crate) mod notify;
