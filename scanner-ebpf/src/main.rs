//! The XDP program. Every inbound frame goes parse -> track -> verdict.
//! Malformed or unknown frames pass untouched: a detector must never be the
//! reason a packet was lost.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod counters;
mod frame;
mod maps;
mod track;
mod verdict;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use scanner_common::{COUNTER_PARSE_FAILURES, COUNTER_SEEN, Parsed, parse};

use crate::frame::XdpFrame;

#[xdp]
pub fn scanner(ctx: XdpContext) -> u32 {
    try_scanner(&ctx)
}

#[inline(always)]
fn try_scanner(ctx: &XdpContext) -> u32 {
    counters::bump(COUNTER_SEEN);
    match parse(&XdpFrame(ctx)) {
        Ok(Parsed::Transport(headers)) => {
            track::track(ctx, &headers);
            verdict::pass()
        }
        Ok(Parsed::NotIp | Parsed::Untracked) => verdict::pass(),
        Err(_) => {
            counters::bump(COUNTER_PARSE_FAILURES);
            verdict::pass()
        }
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

// Keep xdp_action referenced for readers: verdicts live in verdict.rs.
const _: u32 = xdp_action::XDP_PASS;
