//! The `[slow]` section: the long memory of who probed what, kept in the
//! history file, and the slow-scan decision over it (see `crate::memory`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, show, show_duration};
use crate::detect::{
    slow::SlowRule,
    trw::{Probabilities, TrwError},
};

/// The narrowest window: shorter ones are the kernel's job.
const MIN_WINDOW: Duration = Duration::from_secs(10);
/// The widest: a year.
const MAX_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);
/// Fewest rows the memory may be capped at.
const MIN_ROWS: u64 = 1_000;
/// The slow walk must ask for more evidence than this many closed ports.
const MIN_CLOSED_TO_DECIDE: u32 = 4;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SlowConfig {
    /// Keep the long memory and decide slow scans (needs the history file).
    pub enabled: bool,
    /// How long a source's probes are remembered, and the span the
    /// decision looks over.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub window: Duration,
    /// The tolerated probability of calling a benign source (or prefix) a
    /// slow scanner, over the whole window; with `[detection]`'s open
    /// probabilities it sets how many closed ports decide.
    pub false_positive_probability: f64,
    /// Addresses of one prefix (`[aggregation]` lengths) that must have
    /// probed before the prefix is judged as one actor.
    pub min_addresses: u32,
    /// Rows the memory holds at most (one per source, protocol and port):
    /// past it the oldest are forgotten first, and counted.
    pub max_rows: u64,
}

impl Default for SlowConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(7 * 24 * 3600),
            false_positive_probability: 1e-6,
            min_addresses: 3,
            max_rows: 2_000_000,
        }
    }
}

impl SlowConfig {
    /// The walk over the long window: `[detection]`'s open probabilities
    /// and detection rate, this section's false-positive rate.
    pub(crate) fn rule(&self, detection: &Probabilities) -> Result<SlowRule, TrwError> {
        let steps = Probabilities {
            false_positive: self.false_positive_probability,
            ..*detection
        }
        .steps()?;
        Ok(SlowRule {
            steps,
            min_addresses: self.min_addresses,
        })
    }

    pub(crate) fn validate(&self, detection: &Probabilities) -> Result<(), (&'static str, String)> {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&self.window) {
            return Err((
                "window",
                format!(
                    "{} is not {}-{}",
                    show(self.window),
                    show(MIN_WINDOW),
                    show(MAX_WINDOW)
                ),
            ));
        }
        let rule = self
            .rule(detection)
            .map_err(|e| ("false_positive_probability", e.to_string()))?;
        let closed = rule.closed_ports_to_decide();
        if closed <= MIN_CLOSED_TO_DECIDE {
            return Err((
                "false_positive_probability",
                format!(
                    "decides after {closed} closed ports over the whole window: a client's failed connections over days would be a scan; lower it"
                ),
            ));
        }
        if self.min_addresses < 2 {
            return Err((
                "min_addresses",
                "must be at least 2 (one address is judged on its own)".into(),
            ));
        }
        if self.max_rows < MIN_ROWS {
            return Err(("max_rows", format!("must be at least {MIN_ROWS}")));
        }
        Ok(())
    }
}
