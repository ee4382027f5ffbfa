//! Starting `scanner run`, in four phases, each done before the next
//! begins: [`claim`] what must be ours (interfaces, privileges, pins, the
//! metrics port; nothing is loaded yet), [`load_and_restore`]: load the program, fill its maps
//! and take over what an earlier daemon left (the control socket is claimed
//! here, before anything is attached), [`attach`] to every interface or to
//! none, and [`catch_up`] on what no daemon reported, then say ready.

mod attach;
mod catch_up;
mod claim;
mod restore;

use crate::{
    config::{launch::Launch, settings::Settings},
    daemon::{
        Daemon,
        start::{attach::attach, catch_up::catch_up, claim::claim, restore::load_and_restore},
    },
};

/// Claims, loads, attaches and catches up; returns the running daemon, ready.
pub(super) async fn start(launch: Launch, to_journal: bool) -> anyhow::Result<Daemon> {
    let settings = Settings::load(launch)?;
    let claimed = claim(&settings, to_journal).await?;
    let mut loaded = load_and_restore(&settings, claimed).await?;
    let kernel = &mut loaded.kernel;
    kernel.attached = attach(&settings, &kernel.pins, &mut kernel.ebpf, &mut loaded.out)?;
    // Every admission from here on is this program's, in its rings.
    kernel
        .maps
        .admissions_from(crate::kernel::maps::monotonic_ns());
    catch_up(settings, loaded)
}
