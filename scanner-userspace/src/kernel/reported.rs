//! What earlier daemons already reported, kept beside the pinned maps so a
//! restart resumes instead of reporting old scans and blocks again.
//!
//! One pinned u64 (REPORTED, a one-slot array the daemon creates itself; the
//! XDP program never touches it): every decision and block the kernel made
//! at or before this CLOCK_MONOTONIC time has been reported. The daemon
//! advances it after each poll. After a crash the next daemon reports only
//! what came later: at worst a decision from the last poll interval twice,
//! never one lost. A second one (SCANS_ENDED) is set by a clean stop, which
//! reports every open scan as ended: scans decided at or before it are not
//! ended again by the next daemon. bpffs and CLOCK_MONOTONIC both restart at
//! boot, so the marks never outlive the times they compare with.

use aya::maps::{Array, Map, MapData, MapError};
use scanner_common::names::{REPORTED_MAP, SCANS_ENDED_MAP};
use thiserror::Error;

use crate::kernel::pin::PinDir;

#[derive(Debug, Error)]
pub(crate) enum ReportedError {
    #[error("opening the pinned {0} map")]
    Open(&'static str, #[source] MapError),
    #[error("creating the {0} map")]
    Create(&'static str, #[source] MapError),
    #[error("pinning the {0} map")]
    Pin(&'static str, #[source] aya::pin::PinError),
    #[error("reading the {0} map")]
    Read(&'static str, #[source] MapError),
    #[error("writing the {0} map")]
    Write(&'static str, #[source] MapError),
}

/// The pinned "reported up to" and "ended up to" marks.
pub(crate) struct Reported {
    map: Array<MapData, u64>,
    ended: Array<MapData, u64>,
}

/// The one-slot array pinned in `pins` as `name`, created (at 0) when it is
/// not there yet.
fn mark(pins: &PinDir, name: &'static str) -> Result<Array<MapData, u64>, ReportedError> {
    let path = pins.map(name);
    if !path.exists() {
        Array::<MapData, u64>::create(1, 0)
            .map_err(|e| ReportedError::Create(name, e))?
            .pin(&path)
            .map_err(|e| ReportedError::Pin(name, e))?;
    }
    let data = MapData::from_pin(&path).map_err(|e| ReportedError::Open(name, e))?;
    Array::try_from(Map::Array(data)).map_err(|e| ReportedError::Open(name, e))
}

impl Reported {
    /// Opens the marks pinned in `pins`, creating them (at 0: nothing
    /// reported yet) on the first start.
    pub(crate) fn open(pins: &PinDir) -> Result<Self, ReportedError> {
        Ok(Self {
            map: mark(pins, REPORTED_MAP)?,
            ended: mark(pins, SCANS_ENDED_MAP)?,
        })
    }

    /// Everything decided or blocked at or before this time was reported.
    pub(crate) fn get(&self) -> Result<u64, ReportedError> {
        self.map
            .get(&0, 0)
            .map_err(|e| ReportedError::Read(REPORTED_MAP, e))
    }

    pub(crate) fn set(&mut self, up_to_ns: u64) -> Result<(), ReportedError> {
        self.map
            .set(0, up_to_ns, 0)
            .map_err(|e| ReportedError::Write(REPORTED_MAP, e))
    }

    /// Every scan decided at or before this time was reported as ended.
    pub(crate) fn ended(&self) -> Result<u64, ReportedError> {
        self.ended
            .get(&0, 0)
            .map_err(|e| ReportedError::Read(SCANS_ENDED_MAP, e))
    }

    pub(crate) fn set_ended(&mut self, up_to_ns: u64) -> Result<(), ReportedError> {
        self.ended
            .set(0, up_to_ns, 0)
            .map_err(|e| ReportedError::Write(SCANS_ENDED_MAP, e))
    }
}
