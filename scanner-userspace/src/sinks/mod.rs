//! Where events go: the event model and its formats on stdout, the systemd
//! journal, Prometheus metrics, and systemd's readiness notifications.

pub(crate) mod events;
pub(crate) mod journal;
pub(crate) mod metrics;
pub(crate) mod notify;
