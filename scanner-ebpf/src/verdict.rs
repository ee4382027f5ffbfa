//! What happens to the frame. Today every frame passes; blocking adds XDP_DROP here.

use aya_ebpf::bindings::xdp_action;
use scanner_common::COUNTER_PASSED;

use crate::counters;

#[inline(always)]
pub fn pass() -> u32 {
    counters::bump(COUNTER_PASSED);
    xdp_action::XDP_PASS
}
