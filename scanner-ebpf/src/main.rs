//! The XDP program. Every inbound frame goes parse -> verdict (block and
//! allow rules) -> track. Malformed or unknown frames pass untouched: a
//! detector must never be the reason a packet was lost.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core_intrinsics: the BPF target has atomic add but no fetch-add (atomic_xadd)"
)]
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map helpers take pointers: keys and values go by reference, never copied onto the 512-byte stack"
)]

mod account;
mod counters;
mod first;
mod frame;
mod gather;
mod maps;
mod track;
mod variant;
mod verdict;

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use scanner_common::{
    Config, Headers, Shape, SourceAt, Transport, clock, counter, shape, source, step,
};

use crate::{
    frame::XdpFrame,
    maps::{ADMITTED, GATHERED, PREFIXED, REPLAYED},
    track::Tracked,
    verdict::Rule,
};

#[xdp]
pub(crate) fn scanner(ctx: XdpContext) -> u32 {
    try_scanner(&ctx)
}

/// parse -> verdict -> track. The source address is read from the frame
/// only where something needs it: a rule when anything is blocked, and
/// tracking for a probe. So a packet that asks about no port (an accepted
/// connection's ACK or data, a reply) costs, while nothing is blocked, the
/// headers' walk, a few array reads and one counter.
#[inline(always)]
fn try_scanner(ctx: &XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    counters::bump(ifindex, counter::SEEN);
    let frame = XdpFrame(ctx);
    // Match the shape in place: binding the whole enum first makes the
    // compiler copy the unset bytes of the smaller variants, which the
    // verifier rejects.
    match shape(&frame) {
        Ok(Shape::Transport(..)) if variant::stops_after(step::PARSE) => verdict::pass(),
        Ok(Shape::Transport(at, t)) => transport(ctx, at, &t, ifindex),
        Ok(Shape::Untracked(at)) => match source(&frame, at) {
            Ok(source) => apply(verdict::rule(&source), ifindex),
            Err(_) => unparsed(ifindex),
        },
        Ok(Shape::Fragment(at)) => match source(&frame, at) {
            Ok(source) => {
                track::fragment(&source, ifindex);
                apply(verdict::rule(&source), ifindex)
            }
            Err(_) => unparsed(ifindex),
        },
        Ok(Shape::NotIp) => verdict::pass(),
        Err(_) => unparsed(ifindex),
    }
}

/// A packet with a transport header (at `at` its source): its source's
/// rule when anything is blocked, then tracking when it is a probe.
#[inline(always)]
fn transport(ctx: &XdpContext, at: SourceAt, t: &Transport, ifindex: u32) -> u32 {
    let frame = XdpFrame(ctx);
    if !verdict::nothing_blocked() {
        let Ok(source) = source(&frame, at) else {
            return unparsed(ifindex);
        };
        match verdict::rule_of(&source) {
            Rule::None => {}
            // A block spares the connections open with the source.
            Rule::Block if verdict::live_flow(ctx, &source, t) => return verdict::pass(),
            rule => return apply(rule, ifindex),
        }
    }
    // Most packets end here, their source never read.
    let Some(probe) = track::classify(t, at.is_v6(), ifindex) else {
        return verdict::pass();
    };
    let Ok(source) = source(&frame, at) else {
        return unparsed(ifindex);
    };
    let h = Headers {
        source,
        transport: *t,
    };
    match track::track(&h, &probe) {
        Tracked::Counted => verdict::pass(),
        Tracked::Allowlisted => {
            counters::bump(ifindex, counter::ALLOWED);
            verdict::pass()
        }
        Tracked::Replay => {
            // SAFETY: a tail call with this program's own context; on
            // failure (no program in the slot) it returns and the packet
            // passes with its probe uncounted (the next probe makes the
            // entry).
            unsafe { REPLAYED.tail_call(ctx, 0) };
            verdict::pass()
        }
        Tracked::Admitted => {
            // SAFETY: as above (ADMITTED holds `scanner_admit`).
            unsafe { ADMITTED.tail_call(ctx, 0) };
            verdict::pass()
        }
        Tracked::Blocked => verdict::drop(ifindex),
        Tracked::Gather => {
            // SAFETY: as above (GATHERED holds `scanner_gather`).
            unsafe { GATHERED.tail_call(ctx, 0) };
            verdict::pass()
        }
        // Rare here: a source's first two trials are counted at its
        // admission (`scanner_replay`, then `scanner_admit`, which calls
        // `scanner_prefix` too). This is for one whose prefix's entry
        // could not be made then.
        Tracked::Prefix { blocked } => prefix(ctx, ifindex, blocked),
    }
}

/// A frame the parser refused: passed (fail open), and counted.
#[inline(always)]
fn unparsed(ifindex: u32) -> u32 {
    counters::bump(ifindex, counter::PARSE_FAILURES);
    verdict::pass()
}

/// The third run for the probe that admitted a source (tail-called by
/// `scanner_replay`, never attached): the source's entry exists now, so the
/// probe is counted into it like any later one. Rules were applied by the
/// first run, and the packet was counted as seen there.
#[xdp]
pub(crate) fn scanner_admit(ctx: XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    with_headers(&ctx, |h, v6| match track::track_packet(h, v6, ifindex) {
        Tracked::Blocked => verdict::drop(ifindex),
        Tracked::Prefix { blocked } => prefix(&ctx, ifindex, blocked),
        _ => verdict::pass(),
    })
}

/// `run` on the headers of a frame with a transport header, its source
/// read, and whether it is IPv6; XDP_PASS for any other frame. For the
/// tail-called programs: the first run has applied the rules and counted
/// the frame.
#[inline(always)]
fn with_headers(ctx: &XdpContext, run: impl FnOnce(&Headers, bool) -> u32) -> u32 {
    let frame = XdpFrame(ctx);
    // Matched in place, the source read in place: a `Parsed` built from
    // the shape and then matched copies the unset bytes of its smaller
    // variants, which the verifier rejects.
    if let Ok(Shape::Transport(at, transport)) = shape(&frame)
        && let Ok(source) = source(&frame, at)
    {
        return run(&Headers { source, transport }, at.is_v6());
    }
    verdict::pass()
}

/// Hands a probe that owes its source's prefix a trial to `scanner_prefix`
/// (a tail call, which does not return); `blocked`: this probe blocked
/// its source, the verdict should the tail call fail.
#[inline(always)]
fn prefix(ctx: &XdpContext, ifindex: u32, blocked: bool) -> u32 {
    // SAFETY: a tail call with this program's own context; on failure (no
    // program in the slot) it returns and the prefix misses the trial.
    unsafe { PREFIXED.tail_call(ctx, 0) };
    if blocked {
        verdict::drop(ifindex)
    } else {
        verdict::pass()
    }
}

/// The second run for one of an admitted source's first trials
/// (tail-called by `scanner` or `scanner_admit`, never attached): counted
/// into its prefix's entry (see `track::prefixed`). Dropped when it blocked
/// its source.
#[xdp]
pub(crate) fn scanner_prefix(ctx: XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    with_headers(&ctx, |h, v6| {
        if track::prefixed(h, v6, ifindex) {
            verdict::drop(ifindex)
        } else {
            verdict::pass()
        }
    })
}

/// The second run for the probe that admitted a source (tail-called by
/// `scanner`, never attached): the source's entry is made and its first
/// probe counted into it; then the third run (`scanner_admit`) counts this
/// probe.
#[xdp]
pub(crate) fn scanner_replay(ctx: XdpContext) -> u32 {
    with_headers(&ctx, |h, _| {
        if track::replay(h) == Tracked::Admitted {
            // SAFETY: as in `scanner` (ADMITTED holds `scanner_admit`).
            unsafe { ADMITTED.tail_call(&ctx, 0) };
        }
        verdict::pass()
    })
}

/// The second run for a new source's first probe that decides its prefix
/// or belongs to an admitted one (tail-called by `scanner`, never
/// attached): counted into PREFIXES. It always passes: prefixes are never
/// blocked.
#[xdp]
pub(crate) fn scanner_gather(ctx: XdpContext) -> u32 {
    with_headers(&ctx, |h, v6| {
        track::gathered(h, v6, ctx.ingress_ifindex() as u32);
        verdict::pass()
    })
}

/// The probe clock's calibration (see `scanner_common::clock`): the loader
/// test-runs it on a blank frame and reads CLOCK_MONOTONIC_COARSE, then
/// jiffies, from the frame's first 16 bytes. Never attached.
#[xdp]
pub(crate) fn scanner_clock(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 16 <= end {
        // SAFETY: helper calls with no arguments, in this order (the
        // coarse clock first); the 16 bytes written are inside the frame,
        // checked just above.
        unsafe {
            let coarse = bpf_ktime_get_coarse_ns();
            let jiffies = bpf_jiffies64();
            core::ptr::write_unaligned(start as *mut u64, coarse);
            core::ptr::write_unaligned((start + 8) as *mut u64, jiffies);
        }
    }
    verdict::pass()
}

/// Benchmark baseline: the cheapest possible XDP program, measured beside
/// `scanner` by `cargo xtask bench`. The daemon never loads it.
#[xdp]
pub(crate) fn xdp_pass_baseline(_ctx: XdpContext) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_PASS
}

/// CLOCK_MONOTONIC, as the daemon reads it: a decision's time, from which
/// the daemon measures `latency_us`.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper call with no arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The probe clock (see `scanner_common::clock`): CLOCK_MONOTONIC to the
/// timer tick, for a probe's bookkeeping. No helper call: the verifier
/// makes `bpf_jiffies64` a load.
#[inline(always)]
pub fn probe_now(cfg: &Config) -> u64 {
    // SAFETY: a helper call with no arguments.
    clock::at(cfg.clock_origin_ns, unsafe { bpf_jiffies64() }, cfg.tick_ns)
}

/// CLOCK_MONOTONIC as of the last timer tick (up to 1/HZ behind
/// [`now`]), for a block's expiry, which no one needs to the millisecond.
/// It only reads a variable: `cargo xtask bench` prices it at under half
/// of `now` (no clock source is read), on every packet of a blocked source.
#[inline(always)]
pub fn coarse_now() -> u64 {
    // SAFETY: a helper call with no arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The verdict of an allow or block rule (or of no rule).
#[inline(always)]
fn apply(rule: Rule, ifindex: u32) -> u32 {
    match rule {
        // Allowlisted: never blocked, never counted.
        Rule::Allow => {
            counters::bump(ifindex, counter::ALLOWED);
            verdict::pass()
        }
        Rule::Block => verdict::drop(ifindex),
        Rule::None => verdict::pass(),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
