//! Bounds-checked reads from a frame, for the parser: one check per header
//! ([`Frame::header`]), then its fields read in place ([`Header`]), each
//! with one load of its own width.
//!
//! Copying a header out and taking fields from the copy, as the parser did
//! first, cost a load per byte: the BPF backend splits any load it cannot
//! prove aligned into bytes and puts the field together again with shifts,
//! and packet fields are rarely aligned (the IP header starts 14 bytes into
//! the frame). On the BPF target a field is one load of its width instead.
//! The verifier takes such a load of packet memory at any alignment where
//! the kernel has efficient unaligned access (x86-64, arm64); elsewhere it
//! checks alignment as if the frame started 2 bytes past a word boundary
//! (`NET_IP_ALIGN`), which every field read here keeps: the network header
//! starts at 14 plus whole VLAN tags, and each header after it at a
//! multiple of 4.

use core::marker::PhantomData;

/// Bounds-checked reads from a frame.
pub trait Frame {
    /// The `N` bytes at `offset`, or `None` unless all of them are inside
    /// the frame.
    fn header<const N: usize>(&self, offset: usize) -> Option<Header<'_, N>>;
}

impl Frame for [u8] {
    #[inline(always)]
    fn header<const N: usize>(&self, offset: usize) -> Option<Header<'_, N>> {
        let end = offset.checked_add(N)?;
        let bytes = self.get(offset..end)?;
        // SAFETY: `bytes` is N bytes of this slice, borrowed for the
        // header's life.
        Some(unsafe { Header::new(bytes.as_ptr()) })
    }
}

/// `N` bytes of a frame, all inside it: the fields are read at offsets
/// checked against `N` when the parser is compiled.
#[derive(Clone, Copy)]
pub struct Header<'a, const N: usize> {
    start: *const u8,
    frame: PhantomData<&'a [u8; N]>,
}

impl<const N: usize> Header<'_, N> {
    /// # Safety
    /// `start` must be readable for `N` bytes for the header's life.
    #[inline(always)]
    pub unsafe fn new(start: *const u8) -> Self {
        Self {
            start,
            frame: PhantomData,
        }
    }

    /// The byte at `AT`.
    #[inline(always)]
    pub fn u8<const AT: usize>(&self) -> u8 {
        const { assert!(AT < N) };
        // SAFETY: AT < N, checked at compile time; `new`'s contract.
        unsafe { load::<u8, AT>(self.start) }
    }

    /// The big-endian 16-bit field at `AT`.
    #[inline(always)]
    pub fn be16<const AT: usize>(&self) -> u16 {
        const { assert!(AT + 2 <= N) };
        // SAFETY: as in `u8`.
        u16::from_be(unsafe { load::<u16, AT>(self.start) })
    }

    /// The 4 bytes at `AT`, in frame order (an IPv4 address).
    #[inline(always)]
    pub fn bytes4<const AT: usize>(&self) -> [u8; 4] {
        const { assert!(AT + 4 <= N) };
        // SAFETY: as in `u8`.
        unsafe { load::<u32, AT>(self.start) }.to_ne_bytes()
    }

    /// The 16 bytes at `AT`, in frame order (an IPv6 address).
    #[inline(always)]
    pub fn bytes16<const AT: usize>(&self) -> [u8; 16] {
        const { assert!(AT + 16 <= N) };
        // SAFETY: bytes AT..AT + 16 are inside the header (AT + 16 <= N,
        // checked at compile time): the first half at AT, the second 8
        // bytes on (AT + 8 cannot be a const generic argument); `new`'s
        // contract.
        let (high, low) = unsafe {
            (
                load::<u64, AT>(self.start),
                load::<u64, AT>(self.start.wrapping_add(8)),
            )
        };
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&high.to_ne_bytes());
        out[8..].copy_from_slice(&low.to_ne_bytes());
        out
    }
}

/// A field's load: one instruction of its width, whatever the alignment.
pub trait Field: Copy {
    /// The field at `AT` bytes past `start`.
    ///
    /// # Safety
    /// `start + AT` must be readable for the field's size.
    unsafe fn load<const AT: usize>(start: *const u8) -> Self;
}

/// On the host, and the reference for the BPF loads: an unaligned read.
#[cfg(not(target_arch = "bpf"))]
macro_rules! field {
    ($($t:ty => $_insn:literal),*) => {$(
        impl Field for $t {
            #[inline(always)]
            unsafe fn load<const AT: usize>(start: *const u8) -> Self {
                // SAFETY: the caller's contract; read_unaligned needs no
                // alignment.
                unsafe { start.add(AT).cast::<Self>().read_unaligned() }
            }
        }
    )*};
}

/// On the BPF target, the load instruction itself: `read_unaligned` is
/// split into a load per byte there, and a plain read of a misaligned
/// pointer is undefined behaviour. The kernel takes a load of packet
/// memory at any alignment where unaligned access is cheap (see the
/// module's doc).
#[cfg(target_arch = "bpf")]
macro_rules! field {
    ($($t:ty => $insn:literal),*) => {$(
        impl Field for $t {
            #[inline(always)]
            unsafe fn load<const AT: usize>(start: *const u8) -> Self {
                // A load's offset is a signed 16-bit field of the
                // instruction.
                const { assert!(AT <= i16::MAX as usize) };
                let value: u64;
                // SAFETY: the caller's contract for the bytes; the asm
                // only reads them (pure, readonly, no stack), and a BPF
                // load zero-extends what it reads.
                unsafe {
                    core::arch::asm!(
                        $insn,
                        out = lateout(reg) value,
                        p = in(reg) start,
                        at = const AT,
                        options(pure, readonly, nostack, preserves_flags),
                    );
                    // A load of fewer than 8 bytes clears the register's
                    // upper bits: told so, the compiler masks no field
                    // again before comparing it.
                    core::hint::assert_unchecked(value <= Self::MAX as u64);
                }
                value as Self
            }
        }
    )*};
}

field!(
    u8 => "{out} = *(u8 *)({p} + {at})",
    u16 => "{out} = *(u16 *)({p} + {at})",
    u32 => "{out} = *(u32 *)({p} + {at})",
    u64 => "{out} = *(u64 *)({p} + {at})"
);

/// The `T` at `start + AT`, which need not be aligned.
///
/// # Safety
/// `start + AT` must be readable for `size_of::<T>()` bytes.
#[inline(always)]
unsafe fn load<T: Field, const AT: usize>(start: *const u8) -> T {
    // SAFETY: the caller's contract.
    unsafe { T::load::<AT>(start) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields at every alignment read the bytes in frame order.
    #[test]
    fn fields_read_in_frame_order_at_any_alignment() {
        let bytes: [u8; 40] = core::array::from_fn(|i| i as u8);
        for start in 0..8 {
            let h = bytes.header::<24>(start).expect("inside");
            let at = |i: usize| (start + i) as u8;
            assert_eq!(h.u8::<3>(), at(3));
            assert_eq!(h.be16::<1>(), u16::from_be_bytes([at(1), at(2)]));
            assert_eq!(h.bytes4::<5>(), [at(5), at(6), at(7), at(8)]);
            let sixteen: [u8; 16] = core::array::from_fn(|i| at(7 + i));
            assert_eq!(h.bytes16::<7>(), sixteen);
        }
    }

    #[test]
    fn a_header_past_the_end_is_refused() {
        let bytes = [0u8; 20];
        assert!(bytes.header::<20>(0).is_some());
        assert!(bytes.header::<20>(1).is_none());
        assert!(bytes.header::<4>(usize::MAX - 1).is_none());
    }
}
