//! The XDP program. Every inbound frame goes parse -> verdict (allow and
//! block rules) -> track. Malformed or unknown frames pass untouched: a
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

mod counters;
mod frame;
mod maps;
mod track;
mod verdict;

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::xdp, programs::XdpContext};
use scanner_common::{Parsed, counter, parse};

use crate::{frame::XdpFrame, verdict::Rule};

#[xdp]
pub fn scanner(ctx: XdpContext) -> u32 {
    try_scanner(&ctx)
}

#[inline(always)]
fn try_scanner(ctx: &XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    counters::bump(ifindex, counter::SEEN);
    // Match the parse result in place: binding the whole enum first makes
    // the compiler copy the unset bytes of the smaller variants, which the
    // verifier rejects.
    match parse(&XdpFrame(ctx)) {
        Ok(Parsed::Transport(h)) => {
            let now = now();
            match verdict::rule(&h.source, now) {
                Rule::None => {
                    track::track(&h, now, ifindex);
                    verdict::pass(ifindex)
                }
                rule => apply(rule, ifindex),
            }
        }
        Ok(Parsed::Untracked(source)) => apply(verdict::rule(&source, now()), ifindex),
        Ok(Parsed::NotIp) => verdict::pass(ifindex),
        Err(_) => {
            counters::bump(ifindex, counter::PARSE_FAILURES);
            verdict::pass(ifindex)
        }
    }
}

/// Benchmark baseline: the cheapest possible XDP program, measured beside
/// `scanner` by `cargo xtask bench`. The daemon never loads it.
#[xdp]
pub fn xdp_pass_baseline(_ctx: XdpContext) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_PASS
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper call with no arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The verdict of an allow or block rule (or of no rule).
#[inline(always)]
fn apply(rule: Rule, ifindex: u32) -> u32 {
    match rule {
        // Allowlisted: never blocked, never counted.
        Rule::Allow => {
            counters::bump(ifindex, counter::ALLOWED);
            verdict::pass(ifindex)
        }
        Rule::Block => verdict::drop(ifindex),
        Rule::None => verdict::pass(ifindex),
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
