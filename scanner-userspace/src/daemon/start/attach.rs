//! The third phase: attached to every interface, or to none.

use crate::{
    config::settings::Settings,
    daemon::{
        interfaces::warn_shared_counter_slots,
        respond::{Output, emit_interface},
    },
    kernel::{iface, load::Attached, pin::PinDir},
    sinks::event::InterfaceName,
};

/// Interfaces attached so far; dropped before [`Attaching::done`], it
/// detaches them: a start that fails on one interface leaves none attached.
pub(super) struct Attaching<'a> {
    pins: &'a PinDir,
    attached: Vec<Attached>,
}

impl Attaching<'_> {
    /// Every interface is attached: they stay.
    fn done(mut self) -> Vec<Attached> {
        std::mem::take(&mut self.attached)
    }
}

impl Drop for Attaching<'_> {
    fn drop(&mut self) {
        for done in &self.attached {
            self.pins.release(&done.name);
        }
    }
}

/// Attaches the program to every interface (taking over a link an earlier
/// daemon left pinned), or to none.
pub(super) fn attach(
    settings: &Settings,
    pins: &PinDir,
    ebpf: &mut aya::Ebpf,
    out: &mut Output,
) -> anyhow::Result<Vec<Attached>> {
    let launch = &settings.launch;
    let mut attaching = Attaching {
        pins,
        attached: Vec::new(),
    };
    for name in &launch.ifaces {
        let (mode, taken_over) = pins.attach(ebpf, name, launch.xdp_mode)?;
        if taken_over {
            tracing::info!(iface = %name, "took over the XDP link a previous daemon left pinned");
        }
        tracing::info!(iface = %name, mode = mode.as_str(), "XDP program attached");
        attaching.attached.push(Attached {
            name: name.clone(),
            mode,
            index: iface::lookup(name),
        });
        emit_interface(&mut out.reporter, InterfaceName::Attached, name, mode, None);
    }
    let attached = attaching.done();
    warn_shared_counter_slots(&attached);
    Ok(attached)
}
