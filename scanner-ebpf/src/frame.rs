//! `Frame` over the XDP packet: the bounds-checked `ptr_at` the verifier needs.

use core::mem;

use aya_ebpf::programs::XdpContext;
use scanner_common::Frame;

pub(crate) struct XdpFrame<'a>(pub &'a XdpContext);

/// A pointer to `T` at `offset`, or `None` if `T` would cross `data_end`.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

impl Frame for XdpFrame<'_> {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let p = ptr_at::<[u8; N]>(self.0, offset)?;
        // SAFETY: ptr_at checked the N bytes lie inside the packet.
        Some(unsafe { p.read_unaligned() })
    }
}
