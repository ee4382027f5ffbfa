//! Whole-map reads with BPF_MAP_LOOKUP_BATCH: thousands of entries per
//! system call instead of two calls per entry (aya 0.14 has no batch API).
//! A poll of a million sources is ~250 calls, not two million.

use std::{
    io,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd},
};

use aya::{Ebpf, maps::Map};

use crate::sys::{self, BpfCmd};

/// Most entries asked for per call. Hash maps return whole buckets, so a
/// call needs room for the largest bucket; this leaves plenty.
pub(crate) const CHUNK: usize = 8192;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// A duplicate of map `name`'s descriptor, for batch reads after the map
/// itself has been taken out of the object.
pub(crate) fn map_fd(ebpf: &Ebpf, name: &str) -> io::Result<OwnedFd> {
    let data = match ebpf.map(name) {
        Some(
            Map::Array(d)
            | Map::PerCpuArray(d)
            | Map::HashMap(d)
            | Map::LruHashMap(d)
            | Map::PerCpuHashMap(d)
            | Map::PerCpuLruHashMap(d),
        ) => d,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no array or hash map {name}"),
            ));
        }
    };
    data.fd().as_fd().try_clone_to_owned()
}

/// Every entry of the map behind `fd`: keys, and `per_key` values for each
/// (1, or the number of possible CPUs for a per-CPU map, whose values the
/// kernel pads to 8 bytes: use value types of a multiple of 8 bytes).
pub(crate) fn read_all<K, V>(
    fd: BorrowedFd<'_>,
    per_key: usize,
    chunk: usize,
) -> io::Result<(Vec<K>, Vec<V>)>
where
    K: Copy + Default,
    V: Copy + Default,
{
    let (mut all_keys, mut all_values) = (Vec::new(), Vec::new());
    for_each(fd, per_key, chunk, |keys: &[K], values: &[V]| {
        all_keys.extend_from_slice(keys);
        all_values.extend_from_slice(values);
    })?;
    Ok((all_keys, all_values))
}

/// Reads the map behind `fd` in chunks of up to `chunk` entries (at most
/// [`CHUNK`]; a small map needs no more than its size) and hands each chunk
/// to `f` (keys, and `per_key` values per key), reusing one buffer: a
/// million entries stream through without a copy of the map.
pub(crate) fn for_each<K, V>(
    fd: BorrowedFd<'_>,
    per_key: usize,
    chunk: usize,
    mut f: impl FnMut(&[K], &[V]),
) -> io::Result<()>
where
    K: Copy + Default,
    V: Copy + Default,
{
    let chunk = chunk.clamp(1, CHUNK);
    let mut keys = vec![K::default(); chunk];
    let mut values = vec![V::default(); chunk * per_key];
    // The kernel's resume token: a u32 bucket for hashes, a key for arrays.
    let mut token = [0u64; 8];
    let mut next = [0u64; 8];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // The buffers hold `chunk` keys and `chunk * per_key` values: the
        // kernel writes no more.
        let err = sys::bpf(BpfCmd::MapLookupBatch, &mut attr).err();
        let n = (attr.count as usize).min(chunk);
        f(&keys[..n], &values[..n * per_key]);
        match err {
            None => {}
            // The end of the map.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) => return Err(e),
        }
        token = next;
        first = false;
    }
}

/// Number of possible CPUs: the number of values a per-CPU map holds per key.
pub(crate) fn possible_cpus() -> io::Result<usize> {
    aya::util::nr_cpus().map_err(|(_, e)| e)
}
