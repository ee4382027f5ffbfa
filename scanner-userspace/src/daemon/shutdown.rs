//! Stopping `scanner run`: a final poll, every open scan closed, the links
//! unpinned and the program detached; the maps, blocks included, stay
//! pinned for the next start.

use crate::{
    daemon::{
        Daemon,
        respond::{emit_interface, release, write},
        responder::Responder,
    },
    kernel::maps::monotonic_ns,
    sinks::{
        event::{DaemonEvent, DaemonName, InterfaceName},
        notify,
    },
};

/// How long a stop waits for the Local API to take the alerts left.
const FLUSH_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

impl Daemon {
    /// Detaches and exits: Ok after a stop signal, the reason as the error
    /// when the daemon stopped on its own.
    pub(super) async fn shutdown(mut self, failure: Option<anyhow::Error>) -> anyhow::Result<()> {
        notify::tell("STOPPING=1");
        // Nothing lost on the way out: a final poll, then close every open
        // scan. Whatever was decided before this read is ended here, and
        // the mark tells the next daemon not to end it again.
        let read_ns = monotonic_ns();
        let mut findings = self
            .detector
            .poll(monotonic_ns(), &self.kernel.maps.decided().entries);
        findings.extend(self.detector.finish());
        self.report(&findings)?;
        release(&mut self.out, &mut self.kernel.maps, &self.settings, true)?;
        // The long memory takes the last probes, and what it decides from
        // them is reported before the alerts are flushed.
        crate::daemon::slow::hand_over(&mut self.out);
        if let Some(memory) = self.out.memory.take() {
            let scans = memory.finish();
            crate::daemon::slow::report_all(
                &mut self.out,
                &mut self.kernel.maps,
                &self.settings,
                scans,
            )?;
        }
        self.ports
            .port_hours
            .record(&self.kernel.maps, &self.out, true);
        if let Err(e) = self.kernel.reported.set(monotonic_ns()) {
            tracing::warn!("{:#}", anyhow::Error::from(e));
        }
        if let Err(e) = self.kernel.reported.set_ended(read_ns) {
            tracing::warn!("{:#}", anyhow::Error::from(e));
        }
        if let Ok(c) = self.kernel.maps.counters() {
            tracing::info!(
                seen = c.seen,
                passed = c.passed,
                dropped = c.dropped,
                parse_failures = c.parse_failures,
                events_dropped = c.events_dropped,
                "packet counters"
            );
        }
        // A clean stop detaches: unpin the links, then dropping the object
        // closes them. The maps stay pinned, blocks included, for the next start.
        self.out.respond_with(Responder::sweep)?;
        if self.out.responder.policy.active_blocks() > 0 {
            tracing::info!(
                blocks = self.out.responder.policy.active_blocks(),
                pin_dir = %self.settings.launch.pin_dir.display(),
                "blocks kept for the next start"
            );
        }
        // Alerts the Local API has not taken yet get a moment to go; the
        // rest wait in the outbox for the next start.
        if let Some(fleet) = self.out.fleet.take() {
            fleet.stop(FLUSH_WITHIN).await;
        }
        for a in &self.kernel.attached {
            self.kernel.pins.release(&a.name);
        }
        drop(self.kernel.ebpf);
        for a in self.kernel.attached.iter().filter(|a| a.index.is_some()) {
            emit_interface(
                &mut self.out.reporter,
                InterfaceName::Detached,
                &a.name,
                a.mode,
                None,
            );
        }
        self.servers.control.abort();
        if let Some(m) = &self.servers.metrics {
            m.abort();
        }
        let _ = std::fs::remove_file(&self.settings.launch.socket);
        match failure {
            None => {
                write(
                    &mut self.out.reporter,
                    &DaemonEvent::now(DaemonName::Stopped, "detached, exiting"),
                );
                tracing::info!("detached, exiting");
                Ok(())
            }
            Some(e) => {
                write(
                    &mut self.out.reporter,
                    &DaemonEvent::now(DaemonName::Stopped, format!("detached: {e:#}")),
                );
                Err(e)
            }
        }
    }
}
