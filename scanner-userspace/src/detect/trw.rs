//! Threshold Random Walk (Jung, Paxson, Berger, Balakrishnan, "Fast Portscan
//! Detection Using Sequential Hypothesis Testing", IEEE S&P 2004): turns
//! probabilities into the kernel's integer log-likelihood steps and thresholds.
//!
//! Each first probe of a port is a trial: it finds the port open or closed.
//! H0 (benign) expects open with probability θ0, H1 (scanner) with θ1 < θ0.
//! The walk adds ln(θ1/θ0) for open, ln((1-θ1)/(1-θ0)) for closed, and decides
//! H1 at ln(P_D/P_F); it floors at ln((1-P_D)/(1-P_F)), where H0 would be
//! accepted, so a long benign history cannot bank unbounded credit.

use thiserror::Error;

/// Fixed-point scale of kernel scores: 1/1024 nat.
pub(crate) const SCALE: f64 = 1024.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Probabilities {
    /// θ0: a benign source's first probe of a port finds it open.
    pub benign_open: f64,
    /// θ1: a scanner's first probe of a port finds it open.
    pub scanner_open: f64,
    /// P_D: wanted probability of detecting a scanner.
    pub detection: f64,
    /// P_F: tolerated probability of calling a benign source a scanner.
    pub false_positive: f64,
    /// Stealth probes (FIN, NULL, Xmas) to closed ports that decide on their own.
    pub stealth_probes: u32,
}

impl Default for Probabilities {
    fn default() -> Self {
        Self {
            benign_open: 0.8,
            scanner_open: 0.2,
            detection: 0.99,
            false_positive: 0.01,
            stealth_probes: 2,
        }
    }
}

/// The walk in kernel units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Steps {
    pub open: i32,
    pub closed: i32,
    pub stealth: i32,
    pub upper: i32,
    pub lower: i32,
}

#[derive(Debug, Error, PartialEq)]
pub(crate) enum TrwError {
    #[error("{0} must be strictly between 0 and 1, got {1}")]
    OutOfRange(&'static str, f64),
    #[error(
        "scanner_open_probability ({scanner}) must be below benign_open_probability ({benign})"
    )]
    NotSeparated { benign: f64, scanner: f64 },
    #[error(
        "detection_probability ({detection}) must be above false_positive_probability ({false_positive})"
    )]
    Inverted { detection: f64, false_positive: f64 },
    #[error("stealth_probes must be at least 1")]
    NoStealthProbes,
}

fn fixed(x: f64) -> i32 {
    (x * SCALE).round() as i32
}

impl Probabilities {
    pub(crate) fn steps(&self) -> Result<Steps, TrwError> {
        for (name, p) in [
            ("benign_open_probability", self.benign_open),
            ("scanner_open_probability", self.scanner_open),
            ("detection_probability", self.detection),
            ("false_positive_probability", self.false_positive),
        ] {
            if !(p > 0.0 && p < 1.0) {
                return Err(TrwError::OutOfRange(name, p));
            }
        }
        if self.scanner_open >= self.benign_open {
            return Err(TrwError::NotSeparated {
                benign: self.benign_open,
                scanner: self.scanner_open,
            });
        }
        if self.detection <= self.false_positive {
            return Err(TrwError::Inverted {
                detection: self.detection,
                false_positive: self.false_positive,
            });
        }
        if self.stealth_probes == 0 {
            return Err(TrwError::NoStealthProbes);
        }
        let upper = fixed((self.detection / self.false_positive).ln());
        let stealth = (upper + self.stealth_probes as i32 - 1) / self.stealth_probes as i32;
        Ok(Steps {
            open: fixed((self.scanner_open / self.benign_open).ln()),
            closed: fixed(((1.0 - self.scanner_open) / (1.0 - self.benign_open)).ln()),
            stealth,
            upper,
            lower: fixed(((1.0 - self.detection) / (1.0 - self.false_positive)).ln()),
        })
    }
}

impl Steps {
    /// Closed-port first probes needed to decide from a fresh start.
    pub(crate) fn closed_probes_to_decide(&self) -> u32 {
        if self.closed <= 0 {
            return u32::MAX;
        }
        (self.upper as u32).div_ceil(self.closed as u32)
    }
}

#[cfg(test)]
mod tests {
    use scanner_common::Config;

    use super::*;

    #[test]
    fn defaults_match_the_kernel_defaults_and_decide_in_four_probes() {
        let s = Probabilities::default().steps().unwrap();
        let k = Config::default();
        assert_eq!(
            (s.open, s.closed, s.stealth, s.upper, s.lower),
            (k.step_open, k.step_closed, k.step_stealth, k.upper, k.lower)
        );
        assert_eq!(s.closed_probes_to_decide(), 4);
        assert!(s.closed_probes_to_decide() <= 6);
        // Two stealth probes decide, one does not.
        assert!(2 * s.stealth >= s.upper && s.stealth < s.upper);
        // A client whose two connections hit closed ports is not decided.
        assert!(2 * s.closed < s.upper);
    }

    #[test]
    fn stricter_false_positive_rates_need_more_evidence() {
        let strict = Probabilities {
            false_positive: 0.0001,
            ..Probabilities::default()
        };
        let s = strict.steps().unwrap();
        assert!(s.closed_probes_to_decide() > 4);
    }

    #[test]
    fn nonsense_is_refused() {
        let p = Probabilities::default();
        let bad = |q: Probabilities| q.steps().is_err();
        assert!(bad(Probabilities {
            benign_open: 1.0,
            ..p
        }));
        assert!(bad(Probabilities {
            scanner_open: 0.0,
            ..p
        }));
        assert!(bad(Probabilities {
            scanner_open: 0.9,
            ..p
        }));
        assert!(bad(Probabilities {
            detection: 0.001,
            ..p
        }));
        assert!(bad(Probabilities {
            false_positive: f64::NAN,
            ..p
        }));
        assert!(bad(Probabilities {
            stealth_probes: 0,
            ..p
        }));
    }
}
