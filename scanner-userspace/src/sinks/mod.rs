//! Where events go. The model (`event`, its `names`), one module per
//! format (`text`, `json`, `journal`, `record` for the history), the
//! outputs (`stdout`, `file`, the journal) the `reporter` fans out to;
//! and beside them Prometheus `metrics` and systemd's readiness `notify`.

pub(crate) mod event;
pub(crate) mod file;
pub(crate) mod journal;
pub(crate) mod json;
pub(crate) mod metrics;
pub(crate) mod names;
pub(crate) mod notify;
pub(crate) mod output;
pub(crate) mod probes;
pub(crate) mod record;
pub(crate) mod reporter;
pub(crate) mod stdout;
pub(crate) mod syslog;
pub(crate) mod text;
