//! `Frame` over the XDP packet: the bounds check against `data_end` the
//! verifier needs, once per header.

use aya_ebpf::programs::XdpContext;
use scanner_common::{Frame, Header};

pub(crate) struct XdpFrame<'a>(pub &'a XdpContext);

impl Frame for XdpFrame<'_> {
    #[inline(always)]
    fn header<const N: usize>(&self, offset: usize) -> Option<Header<'_, N>> {
        let start = self.0.data();
        if start + offset + N > self.0.data_end() {
            return None;
        }
        // SAFETY: the N bytes at `offset` lie inside the packet, checked
        // just above; the packet outlives this run of the program.
        Some(unsafe { Header::new((start + offset) as *const u8) })
    }
}
