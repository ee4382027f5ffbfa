//! The last phase: what no daemon reported, reported; then ready.

use std::{sync::Arc, time::Instant};

use crate::{
    config::settings::Settings,
    control,
    daemon::{
        Daemon, Facts, FullScans, PortWatch, Servers,
        respond::{Output, report, write},
        responder::{Responder, forget_lifted},
        start::restore::Loaded,
    },
    kernel::maps::monotonic_ns,
    sinks::{
        event::{DaemonEvent, DaemonName},
        metrics::{self},
        notify,
    },
};

/// Catches up before saying ready: reports at once what the earlier daemon
/// did not (decisions and blocks the kernel made while no daemon read
/// them, listening ports that changed), then serves the control socket and
/// the metrics and tells systemd.
pub(super) fn catch_up(settings: Settings, loaded: Loaded) -> anyhow::Result<Daemon> {
    let Loaded {
        mut kernel,
        mut out,
        mut detector,
        control,
        metrics,
        listeners,
        listening_before,
        history,
        port_hours,
        protected_now,
        resumed,
        kernel_memory,
    } = loaded;
    let snapshot = kernel.maps.decided();
    if resumed.0 + resumed.1 > 0 {
        tracing::info!(
            detections = resumed.0,
            blocks = resumed.1,
            "resumed what an earlier daemon reported: not reported again"
        );
    }
    let findings = detector.poll(monotonic_ns(), &snapshot.entries);
    report(&mut out, &mut kernel.maps, &settings, &findings)?;
    let lifted = out.respond_with(Responder::sweep)?;
    forget_lifted(&mut kernel.maps, &lifted);
    // A scan block kept from before on an address protected now.
    out.respond_with(|r| r.spare_protected(&mut kernel.maps, &protected_now))?;
    let (calls_tx, calls) = tokio::sync::mpsc::channel(16);
    let server = tokio::spawn(control::server::serve(control, calls_tx));
    let metrics_server = metrics.map(|(l, registry)| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        }
        tokio::spawn(metrics::serve(l, Arc::new(registry)))
    });
    // Listening ports: what changed while no daemon watched is reported
    // now.
    let (mut listening, from_history) =
        crate::daemon::history::Listening::new(listening_before, &listeners);
    listening.update(&mut out, &listeners, !from_history);
    // A pin file's times are those of its pinning: when counting began.
    let counting_since = std::fs::metadata(kernel.pins.map(scanner_common::names::COUNTERS_MAP))
        .and_then(|m| m.modified())
        .ok();
    let ifaces = settings.launch.ifaces.join(", ");
    let detail = format!("watching {ifaces}; {}", blocking_state(&settings, &out));
    write(
        &mut out.reporter,
        &DaemonEvent::now(DaemonName::Started, detail),
    );
    notify::tell(&format!("READY=1\nSTATUS=watching {ifaces}"));
    Ok(Daemon {
        settings,
        kernel,
        out,
        detector,
        servers: Servers {
            calls,
            control: server,
            metrics: metrics_server,
        },
        ports: PortWatch {
            last_hour: history,
            port_hours,
            listening,
        },
        facts: Facts {
            started: Instant::now(),
            counting_since,
            resumed,
            kernel_memory,
        },
        scans: FullScans::default(),
        heap_released: std::time::Instant::now(),
    })
}

/// "blocking on", "blocking off", or what a dry run does.
pub(super) fn blocking_state(settings: &Settings, out: &Output) -> String {
    if settings.dry_run() {
        format!(
            "dry run: nothing is dropped ({} kept blocks not enforced)",
            out.responder.policy.active_blocks()
        )
    } else if settings.blocks() {
        "blocking on".into()
    } else {
        "blocking off".into()
    }
}
