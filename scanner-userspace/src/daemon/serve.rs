//! The running daemon's events: decisions from the ring buffer, polls,
//! open-port refreshes, control requests, SIGHUP reloads, until a stop
//! signal or nothing is left to watch or to report to.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::{
    config::{reload, settings::Settings},
    control::Response,
    daemon::{
        Daemon, Signals,
        interfaces::watch_interfaces,
        probes::ProbeWatch,
        requests::{State, handle},
        respond::{Output, report, write},
        responder::{Responder, forget_lifted},
        upkeep::{forget_allowlisted, log_protected, refresh_open_ports},
    },
    detect::{Detector, EntryId},
    kernel::{
        decisions,
        load::{self, Attached},
        maps::{CounterTable, FirstSweep, Maps, PollError, monotonic_ns},
        policy::{self, AllowOrigin, Origin},
    },
    sinks::{
        event::{DaemonEvent, DaemonName},
        notify,
    },
};

/// The longest time between two polls that read every tracked source (the
/// safety net for ring buffer records lost, and the count of tracked
/// sources); other polls only look up the scans already detected.
const FULL_SCAN_MAX: Duration = Duration::from_secs(30);
/// Even an empty map costs a walk of its buckets: not at every poll.
const FULL_SCAN_MIN: Duration = Duration::from_secs(2);
/// First-probe slots swept between two looks at the ring buffer: 2 MiB
/// of the mapping, a fraction of a millisecond.
const SWEEP_STEP: usize = 1 << 16;
/// How often the allocator's free memory is handed back (see
/// `sys::release_free_heap`).
const RELEASE_HEAP_EVERY: Duration = Duration::from_secs(30);

fn interval(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval(period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

impl Daemon {
    /// Serves until a stop signal (Ok(None)) or until it must stop on its
    /// own (Ok(Some(why))); a failing map read ends it with an error.
    pub(super) async fn serve(
        &mut self,
        signals: &mut Signals,
    ) -> anyhow::Result<Option<anyhow::Error>> {
        let mut tick = interval(self.settings.poll_interval());
        let mut refresh = interval(self.settings.file.report.open_ports_refresh);
        loop {
            tokio::select! {
                batch = self.kernel.decisions.next_batch() => {
                    let batch = batch.context("reading the EVENTS ring buffer")?;
                    on_decisions(&batch, &mut self.kernel.maps, &mut self.detector, &mut self.out, &self.settings)?;
                }
                _ = tick.tick() => {
                    if let Some(why) = self.poll()? {
                        return Ok(Some(why));
                    }
                }
                _ = refresh.tick() => self.refresh()?,
                Some(pulled) = crate::fleet::next_pull(&mut self.out.fleet) => {
                    self.out.respond_with(|r| r.enforce(pulled))?;
                }
                Some((request, reply)) = self.servers.calls.recv() => {
                    let answer = self.answer(request);
                    let _ = reply.send(answer);
                }
                _ = signals.hangup.recv() => {
                    let (poll_before, refresh_before) =
                        (self.settings.poll_interval(), self.settings.file.report.open_ports_refresh);
                    self.reload().await;
                    if self.settings.poll_interval() != poll_before {
                        tick = interval(self.settings.poll_interval());
                    }
                    if self.settings.file.report.open_ports_refresh != refresh_before {
                        refresh = interval(self.settings.file.report.open_ports_refresh);
                    }
                }
                _ = signals.interrupt.recv() => return Ok(None),
                _ = signals.terminate.recv() => return Ok(None),
            }
        }
    }

    /// One poll: the ring buffer drained, the scans known (or, now and
    /// then, every tracked entry) read and reported, expired blocks lifted,
    /// metrics and the reported mark updated, interfaces checked. Returns
    /// why the daemon must stop, if it must.
    fn poll(&mut self) -> anyhow::Result<Option<anyhow::Error>> {
        let began = Instant::now();
        // Every decision made before `began_ns` is in the ring buffer by
        // now, or was dropped there (counted, and a full scan follows):
        // after this poll all of them are reported.
        let began_ns = monotonic_ns();
        self.drain_ring()?;
        // Decisions arrive on the ring buffer; a poll only follows the scans
        // already known. Every `full_every`, and at once when the ring
        // buffer dropped a record, every entry is read (only decided ones
        // are kept: a scan the detector knows that is gone from them was
        // evicted or started anew).
        let counters = self.kernel.maps.counter_table();
        let scans = &mut self.scans;
        let dropped = counters
            .as_ref()
            .map_or(scans.events_dropped, |c| c.total().events_dropped);
        let full = scans
            .last
            .is_none_or(|t: Instant| t.elapsed() >= scans.every)
            || dropped != scans.events_dropped;
        let (entries, sweep) = if full {
            // The undecided admitted sources that probed since the last
            // full scan, for the probe signals' later ports. Probes are
            // stamped by the probe clock, which lags: a source stamped
            // within the lag before the last scan may be new since (one
            // seen by both is offered once: `ProbeWatch::admitted`).
            let since = scans
                .last_ns
                .saturating_sub(scanner_common::clock::MAX_LAG_NS);
            let mut undecided = Vec::new();
            let watching = self.out.probes.is_some();
            let (snapshot, sweep) = self.kernel.maps.decided_then_sweep(|key, stats| {
                if watching
                    && stats.decided_ns == 0
                    && stats.ports > 1
                    && stats.last_probe_ns > since
                {
                    undecided.push((*key, *stats));
                }
            });
            scans.last_ns = began_ns;
            if let Some(probes) = &mut self.out.probes {
                probes.admitted(
                    &self.kernel.maps,
                    &undecided,
                    &self.out.names,
                    &self.out.metrics,
                );
            }
            // The first probes are swept later, a step at a time.
            (scans.tracked, scans.last, scans.events_dropped) =
                (snapshot.sources, Some(Instant::now()), dropped);
            (snapshot.entries, Some((sweep, began.elapsed())))
        } else {
            (self.kernel.maps.decided_among(&self.detector.ids()), None)
        };
        let findings = self.detector.poll(monotonic_ns(), &entries);
        let mut polled = began.elapsed();
        self.report(&findings)?;
        // Decisions made while this poll ran go first: a block the kernel
        // made at a deciding probe is reported after its detection, which
        // may find the source protected and lift it.
        self.drain_ring()?;
        polled += self.walk_probes()?;
        if let Some((sweep, took)) = sweep {
            polled += self.sweep_first_probes(sweep, took)?;
        }
        self.out.metrics.poll_took(polled);
        // Every decision the kernel made before this poll's probes were
        // walked is marked in the long memory now (`report`): it takes the
        // probes after, and decides nothing the kernel did.
        crate::daemon::slow::hand_over(&mut self.out);
        crate::daemon::slow::report_decided(&mut self.out, &mut self.kernel.maps, &self.settings)?;
        let lifted = self.out.respond_with(Responder::sweep)?;
        forget_lifted(&mut self.kernel.maps, &lifted);
        self.out.respond_with(|r| r.reinstate(&lifted))?;
        update_metrics(
            &mut self.out,
            counters,
            &self.kernel.attached,
            self.scans.tracked,
        );
        // A detection held for its decoy group is not reported yet.
        let mut reported_ns = began_ns.saturating_sub(RING_SLACK_NS);
        if let Some(held) = self.out.responder.decoys.earliest_held_ns() {
            reported_ns = reported_ns.min(held.saturating_sub(1));
        }
        if let Err(e) = self.kernel.reported.set(reported_ns) {
            tracing::warn!("{:#}", anyhow::Error::from(e));
        }
        if self.heap_released.elapsed() >= RELEASE_HEAP_EVERY {
            crate::sys::release_free_heap();
            self.heap_released = Instant::now();
        }
        if !watch_interfaces(
            &mut self.kernel.attached,
            &mut self.kernel.ebpf,
            &self.kernel.pins,
            &self.settings.launch,
            &mut self.out,
        ) {
            return Ok(Some(anyhow::anyhow!(
                "no watched interface is left (removed, and --no-reattach is set)"
            )));
        }
        if !self.out.reporter.has_sink()
            && !self.settings.blocks()
            && self.servers.metrics.is_none()
        {
            return Ok(Some(anyhow::anyhow!(
                "stdout is closed and there is no journal, no metrics and no blocking: nothing left to do"
            )));
        }
        Ok(None)
    }

    /// The first probes written since the last poll, for the probe signals
    /// and the long memory: walked a step at a time (a pass over a million
    /// slots takes milliseconds), the decisions made meanwhile reported
    /// between steps. After the detector's read of the entries: a decision
    /// it reports before that read would be missing from it, and taken for
    /// an evicted scan. Returns the time the steps took (the reports
    /// between them left out).
    fn walk_probes(&mut self) -> anyhow::Result<Duration> {
        let Some(mut walk) = self.out.probes.as_ref().and_then(ProbeWatch::begin_walk) else {
            return Ok(Duration::ZERO);
        };
        self.in_steps(|d| {
            d.out.probes.as_mut().is_some_and(|probes| {
                probes.walk_step(
                    &mut walk,
                    &d.kernel.maps,
                    SWEEP_STEP,
                    &d.out.names,
                    &d.out.metrics,
                )
            })
        })
    }

    /// The rest of a full scan: the first-probe slots swept a step at a
    /// time (a million of them take milliseconds), the decisions made
    /// meanwhile reported between steps, not after the whole sweep. Then
    /// the scan's figures: the sources tracked, what the scan cost (`took`
    /// so far), and so when the next is due. Returns the time the steps
    /// took (the reports between them left out).
    fn sweep_first_probes(
        &mut self,
        mut sweep: FirstSweep,
        took: Duration,
    ) -> anyhow::Result<Duration> {
        let steps = self.in_steps(|d| {
            let live = d.kernel.maps.sweep_step(&mut sweep, SWEEP_STEP);
            d.scans.tracked += live.unwrap_or(0);
            live.is_some()
        })?;
        let took = took + steps;
        self.out.metrics.full_scan_took(took);
        // At most 1% of a core on full scans: a small map is read every
        // 2 s, a million sources every 30 s.
        self.scans.every = (took * 100).clamp(FULL_SCAN_MIN, FULL_SCAN_MAX);
        Ok(steps)
    }

    /// Runs `step` until it says it is done, reading the ring buffer after
    /// each step that did something; returns the time the steps took (the
    /// reports between them left out).
    fn in_steps(&mut self, mut step: impl FnMut(&mut Self) -> bool) -> anyhow::Result<Duration> {
        let mut took = Duration::ZERO;
        loop {
            let began = Instant::now();
            let more = step(self);
            took += began.elapsed();
            if !more {
                return Ok(took);
            }
            self.drain_ring()?;
        }
    }

    /// Reports findings: events, and the response to detections.
    pub(super) fn report(&mut self, findings: &[crate::detect::Finding]) -> anyhow::Result<()> {
        report(
            &mut self.out,
            &mut self.kernel.maps,
            &self.settings,
            findings,
        )
    }

    /// Reports what the ring buffer holds now, without waiting.
    fn drain_ring(&mut self) -> anyhow::Result<()> {
        on_decisions(
            &self.kernel.decisions.drain(),
            &mut self.kernel.maps,
            &mut self.detector,
            &mut self.out,
            &self.settings,
        )
    }

    /// The host's open ports into the kernel; now and then a snapshot of
    /// the probes per port, for "the last hour".
    fn refresh(&mut self) -> anyhow::Result<()> {
        let read_ns = monotonic_ns();
        let listeners = refresh_open_ports(
            &mut self.kernel.port_bits,
            &self.settings.file.detection.ignore_ports,
        )?;
        self.ports
            .listening
            .update(&mut self.out, &listeners, false);
        self.ports
            .port_hours
            .record(&self.kernel.maps, &self.out, false);
        let r = &mut self.out.responder;
        let protected = log_protected(&mut r.protected, &mut r.policy)?;
        let maps = &mut self.kernel.maps;
        self.out
            .respond_with(|r| r.spare_protected(maps, &protected))?;
        self.ports.last_hour.refresh(&self.kernel.maps, &self.out);
        if let Some(probes) = &mut self.out.probes {
            probes.refresh(
                crate::audit::listeners::open_ports(&listeners),
                read_ns,
                &self.out.names,
                &self.out.metrics,
            );
        }
        Ok(())
    }

    /// The answer to one control request.
    fn answer(&mut self, request: crate::control::Request) -> Response {
        let state = State {
            attached: &self.kernel.attached,
            started: self.facts.started,
            detector: &self.detector,
            ports: self.ports.last_hour.hits(),
            tracked: self.scans.tracked,
            counting_since: self.facts.counting_since,
            settings: &self.settings,
            resumed: self.facts.resumed,
            kernel_memory: self.facts.kernel_memory,
            reported_ns: self.kernel.reported.get().unwrap_or(0),
        };
        handle(request, &mut self.out, &mut self.kernel.maps, &state)
            .unwrap_or_else(|e| Response::error(format!("{e:#}")))
    }

    /// SIGHUP: the events file opened again (logrotate moved it), and the
    /// configuration file again, applied in place, or refused with the old
    /// one kept.
    async fn reload(&mut self) {
        notify::tell(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            notify::monotonic_usec()
        ));
        if let Err(e) = self.out.reporter.reopen() {
            tracing::error!(
                "{:#}, events go on to the file open before",
                anyhow::Error::from(e)
            );
        }
        match reload_config(
            &self.settings,
            self.kernel.ephemeral,
            &mut self.kernel.ebpf,
            &mut self.out,
        ) {
            Ok((new, mut summary)) => {
                if new.file.crowdsec != self.settings.file.crowdsec {
                    summary.push_str(&self.restart_fleet(&new.file.crowdsec).await);
                }
                forget_allowlisted(&mut self.kernel.maps, &self.out.responder.policy);
                self.detector.set_quiet_ns(new.quiet_ns());
                if let (Some(memory), Some(settings)) =
                    (&self.out.memory, crate::daemon::slow::settings(&new))
                {
                    memory.set(settings);
                }
                self.out.responder.protected.set_kinds(new.protection());
                let r = &mut self.out.responder;
                let protected = log_protected(&mut r.protected, &mut r.policy);
                match protected {
                    Ok(protected) => {
                        let maps = &mut self.kernel.maps;
                        if let Err(e) = self
                            .out
                            .respond_with(|r| r.spare_protected(maps, &protected))
                        {
                            tracing::warn!("{e:#}");
                        }
                    }
                    Err(e) => tracing::warn!("{e:#}"),
                }
                self.settings = new;
                tracing::info!("configuration reloaded: {summary}");
                write(
                    &mut self.out.reporter,
                    &DaemonEvent::now(DaemonName::ConfigReloaded, summary),
                );
            }
            Err(e) => {
                tracing::error!("configuration rejected, the previous one stays: {e:#}");
                write(
                    &mut self.out.reporter,
                    &DaemonEvent::now(DaemonName::ConfigRejected, format!("{e:#}")),
                );
            }
        }
        notify::tell("READY=1");
    }
}

impl Daemon {
    /// The `[crowdsec]` section changed: the link starts again with the new
    /// one (its first pull lists every active decision, so blocks of
    /// decisions deleted meanwhile are lifted). Returns what to add to the
    /// reload's summary.
    async fn restart_fleet(&mut self, section: &crate::config::crowdsec::CrowdSecConfig) -> String {
        if let Some(old) = self.out.fleet.take() {
            let queued = old.queued();
            if queued > 0 && old.outbox_path() != Some(section.outbox.as_path()) {
                tracing::warn!(
                    queued,
                    outbox = %old.outbox_path().unwrap_or(std::path::Path::new("")).display(),
                    "CrowdSec link restarted with another outbox: the alerts in the old one wait for a daemon that uses it"
                );
            }
        }
        self.out.metrics.fleet_restarted();
        // No network wait here: the tasks check the credentials themselves.
        let summary = match crate::fleet::Fleet::start_unchecked(section).await {
            Ok(Some(fleet)) => {
                self.out.fleet = Some(fleet);
                "; CrowdSec link restarted".to_owned()
            }
            Ok(None) => "; CrowdSec link off".into(),
            Err(e) => {
                let e = anyhow::Error::from(e);
                tracing::error!("CrowdSec link not restarted: {e:#}");
                format!("; CrowdSec link off: {e:#}")
            }
        };
        // No bouncer any more: the fleet's blocks go (its first pull would
        // have reconciled them otherwise).
        if !self
            .out
            .fleet
            .as_ref()
            .is_some_and(crate::fleet::Fleet::pulling)
            && let Err(e) = self.out.respond_with(Responder::lift_all)
        {
            tracing::warn!("lifting CrowdSec blocks: {e:#}");
        }
        summary
    }
}

/// How long after the kernel stamps a decision its ring buffer record is
/// surely committed (reserve and submit are one program run apart).
const RING_SLACK_NS: u64 = 10_000_000;

/// Findings from ring buffer records, reported.
pub(super) fn on_decisions(
    batch: &[scanner_common::Decision],
    maps: &mut Maps,
    detector: &mut Detector,
    out: &mut Output,
    settings: &Settings,
) -> anyhow::Result<()> {
    // One report for the batch: decoys decided together are grouped there.
    let mut findings = Vec::new();
    for d in batch {
        let id = EntryId {
            scope: d.scope,
            key: d.key,
        };
        // Under a flood the entry may be evicted already: the record itself
        // still tells who and when.
        let stats = maps.entry(id).unwrap_or_else(|| decisions::stats_of(d));
        findings.extend(detector.observe(monotonic_ns(), id, &stats));
    }
    if findings.is_empty() {
        return Ok(());
    }
    report(out, maps, settings, &findings)
}

/// Reads the configuration file again and applies it: the kernel's
/// thresholds, blocking and block TTL, the file's allowlist. State (tracked
/// sources, blocks, detections) is kept. On any error nothing changes.
fn reload_config(
    current: &Settings,
    ephemeral: (u16, u16),
    ebpf: &mut aya::Ebpf,
    out: &mut Output,
) -> anyhow::Result<(Settings, String)> {
    let mut new = current.reloaded()?;
    let plan = reload::plan(current, &new);
    // What only a restart changes stays as it runs, in the kernel's CONFIG
    // as in what the daemon reads (a prefix scan keeps its prefix length).
    new.keep_restart_only(current);
    let config = new.kernel(ephemeral)?;
    // Check every new allowlist entry fits before changing anything.
    if out.responder.policy.allowlist().len() + plan.allow.len()
        > scanner_common::names::ALLOW_CAPACITY as usize
    {
        anyhow::bail!(
            "the allowlist would exceed {} entries",
            scanner_common::names::ALLOW_CAPACITY
        );
    }
    load::write_config(ebpf, &config).context("writing the CONFIG map")?;
    for net in &plan.disallow {
        // Gone already (`scanner disallow`) is fine.
        let _ = out.responder.policy.disallow(*net);
    }
    // The host's own addresses may have changed: they stay allowlisted.
    let host = policy::default_allowlist();
    let allow = plan
        .allow
        .iter()
        .map(|n| (n, AllowOrigin::Config))
        .chain(host.iter().map(|n| (n, AllowOrigin::Host)));
    out.respond_with(|r| {
        for (net, origin) in allow {
            r.allow(*net, origin)?;
        }
        Ok(())
    })?;
    out.responder
        .policy
        .set_enforcing(!new.dry_run())
        .context("writing the BLOCKS_EMPTY map")?;
    let summary = reload::summary(&new, &plan);
    Ok((new, summary))
}

/// Kernel counters per interface, tracked sources and blocks, for /metrics.
fn update_metrics(
    out: &mut Output,
    counters: Result<CounterTable, PollError>,
    attached: &[Attached],
    sources: usize,
) {
    match counters {
        Ok(table) => {
            for a in attached {
                if let Some(index) = a.index {
                    out.metrics.packets(&a.name, table.iface(index));
                }
            }
            out.metrics.totals(table.total());
        }
        Err(e) => tracing::warn!("reading counters: {:#}", anyhow::Error::from(e)),
    }
    out.metrics.sources(sources);
    out.metrics
        .blocks_active(out.responder.policy.active_blocks());
    let mut by_origin: Vec<(&str, usize)> = Origin::ALL.iter().map(|o| (o.as_str(), 0)).collect();
    for (_, entry) in out.responder.policy.blocks() {
        let origin = Origin::of(entry.reason).as_str();
        if let Some(slot) = by_origin.iter_mut().find(|(o, _)| *o == origin) {
            slot.1 += 1;
        }
    }
    out.metrics.blocks_by_origin(&by_origin);
    if let Some(s) = &out.signals {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let (sent, dropped) = (get(&s.sent), get(&s.dropped));
        out.metrics.syslog(sent, dropped);
    }
    if let Some(h) = out.reporter.history() {
        let s = h.stats();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let (errors, written) = (get(&s.errors), get(&s.written));
        out.metrics.history(errors, written);
    }
    if let Some(memory) = &out.memory {
        let s = memory.stats();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        out.metrics.memory(
            get(&s.rows),
            [get(&s.probes), get(&s.dropped), get(&s.capped)],
        );
    }
    if let Some(figures) = out.fleet.as_ref().map(crate::fleet::Fleet::figures) {
        out.metrics.fleet(figures);
    }
}
