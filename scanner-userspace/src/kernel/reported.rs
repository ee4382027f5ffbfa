//! What earlier daemons already reported, kept beside the pinned maps so a
//! restart resumes instead of reporting old scans and blocks again.
//!
//! One pinned u64 (REPORTED, a one-slot array the daemon creates itself; the
//! XDP program never touches it): every decision and block the kernel made
//! at or before this CLOCK_MONOTONIC time has been reported. The daemon
//! advances it after each poll. After a crash the next daemon reports only
//! what came later: at worst a decision from the last poll interval twice,
//! never one lost. bpffs and CLOCK_MONOTONIC both restart at boot, so the
//! mark never outlives the times it compares with.

use aya::maps::{Array, Map, MapData, MapError};
use scanner_common::names::REPORTED_MAP;
use thiserror::Error;

use crate::kernel::pin::PinDir;

#[derive(Debug, Error)]
pub enum ReportedError {
    #[error("opening the pinned {REPORTED_MAP} map")]
    Open(#[source] MapError),
    #[error("creating the {REPORTED_MAP} map")]
    Create(#[source] MapError),
    #[error("pinning the {REPORTED_MAP} map")]
    Pin(#[source] aya::pin::PinError),
    #[error("reading the {REPORTED_MAP} map")]
    Read(#[source] MapError),
    #[error("writing the {REPORTED_MAP} map")]
    Write(#[source] MapError),
}

/// The pinned "reported up to" mark.
pub struct Reported {
    map: Array<MapData, u64>,
}

impl Reported {
    /// Opens the mark pinned in `pins`, creating it (at 0: nothing reported
    /// yet) on the first start.
    pub fn open(pins: &PinDir) -> Result<Self, ReportedError> {
        let path = pins.map(REPORTED_MAP);
        if !path.exists() {
            Array::<MapData, u64>::create(1, 0)
                .map_err(ReportedError::Create)?
                .pin(&path)
                .map_err(ReportedError::Pin)?;
        }
        let data = MapData::from_pin(&path).map_err(ReportedError::Open)?;
        let map = Array::try_from(Map::Array(data)).map_err(ReportedError::Open)?;
        Ok(Self { map })
    }

    /// Everything decided or blocked at or before this time was reported.
    pub fn get(&self) -> Result<u64, ReportedError> {
        self.map.get(&0, 0).map_err(ReportedError::Read)
    }

    pub fn set(&mut self, up_to_ns: u64) -> Result<(), ReportedError> {
        self.map.set(0, up_to_ns, 0).map_err(ReportedError::Write)
    }
}
