//! Timing variants (see `scanner_common::step`). Built with the `steps`
//! feature (`cargo xtask bench` builds that object on its own), the program
//! reads `STOP_AFTER`, which the bench sets at load, and passes the packet
//! right after that step. Without it, which is the daemon's program, every
//! early stop is `false` and compiles away.

#[cfg(feature = "steps")]
use scanner_common::step;

/// The step this variant stops after ([`step::WHOLE`]: none). Read-only
/// data: the loader may set it, nothing changes it afterwards.
#[cfg(feature = "steps")]
#[unsafe(no_mangle)]
static STOP_AFTER: u32 = step::WHOLE;

/// Whether this variant passes the packet right after step `s`.
#[cfg(feature = "steps")]
#[inline(always)]
pub(crate) fn stops_after(s: u32) -> bool {
    // SAFETY: a read of an initialised static. Volatile, so the compiler
    // keeps the load: the loader may have set another value.
    unsafe { core::ptr::read_volatile(&raw const STOP_AFTER) == s }
}

/// Whether this variant passes the packet right after step `s`: never, in
/// the daemon's program.
#[cfg(not(feature = "steps"))]
#[inline(always)]
pub(crate) fn stops_after(_s: u32) -> bool {
    false
}

/// What one helper call costs here, for the bench's breakdown: ten calls of
/// `bpf_ktime_get_coarse_ns`, which only reads a variable.
#[cfg(feature = "steps")]
#[aya_ebpf::macros::xdp]
pub(crate) fn cost_call(_ctx: aya_ebpf::programs::XdpContext) -> u32 {
    ten_reads(crate::coarse_now)
}

/// Ten reads of the precise clock (`bpf_ktime_get_ns`), a decision's.
#[cfg(feature = "steps")]
#[aya_ebpf::macros::xdp]
pub(crate) fn cost_clock(_ctx: aya_ebpf::programs::XdpContext) -> u32 {
    ten_reads(crate::now)
}

/// Ten reads of the timer tick (`bpf_jiffies64`, which the verifier
/// replaces by a load on 64-bit machines).
#[cfg(feature = "steps")]
#[aya_ebpf::macros::xdp]
pub(crate) fn cost_jiffies(_ctx: aya_ebpf::programs::XdpContext) -> u32 {
    // SAFETY: a helper call with no arguments.
    ten_reads(|| unsafe { aya_ebpf::helpers::bpf_jiffies64() })
}

/// Ten hash-map lookups of a source key (PROTECTED, which the bench leaves
/// empty): the call, the key's hash and an empty bucket.
#[cfg(feature = "steps")]
#[aya_ebpf::macros::xdp]
pub(crate) fn cost_lookup(_ctx: aya_ebpf::programs::XdpContext) -> u32 {
    let mut found = 0u64;
    for i in 0..10u8 {
        let key = scanner_common::SourceKey::from_v4([198, 18, 0, i]);
        found += u64::from(crate::maps::PROTECTED.get_ptr(&key).is_some());
    }
    pass_unless_zero(found + 1)
}

/// The CoNEXT 2018 XDP paper's floor: one per-CPU counter bumped, then
/// XDP_PASS (the counter is `scanner`'s own SEEN slot for the interface).
#[cfg(feature = "steps")]
#[aya_ebpf::macros::xdp]
pub(crate) fn count_and_pass(ctx: aya_ebpf::programs::XdpContext) -> u32 {
    crate::counters::bump(ctx.ingress_ifindex() as u32, scanner_common::counter::SEEN);
    aya_ebpf::bindings::xdp_action::XDP_PASS
}

/// Reads `read` ten times: what one read costs, for the building blocks.
#[cfg(feature = "steps")]
#[inline(always)]
fn ten_reads(read: impl Fn() -> u64) -> u32 {
    let mut t = 0u64;
    for _ in 0..10 {
        t = t.wrapping_add(read());
    }
    pass_unless_zero(t)
}

/// XDP_PASS, made to depend on `v` so the work before it is kept.
#[cfg(feature = "steps")]
#[inline(always)]
fn pass_unless_zero(v: u64) -> u32 {
    if v == 0 {
        aya_ebpf::bindings::xdp_action::XDP_DROP
    } else {
        aya_ebpf::bindings::xdp_action::XDP_PASS
    }
}
