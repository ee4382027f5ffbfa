//! The kernel memory the maps take at default capacities, as the kernel
//! accounts it (`memlock` in each map's fdinfo, what `bpftool map show`
//! prints): under the 64 MiB a small VM must not notice, for at least
//! 1,048,576 tracked sources. The daemon reports the same figure in
//! `scanner status`.

use scanner_common::{
    Config,
    names::{SOURCES_CAPACITY, first_probe_slots, suspects},
};
use scanner_userspace::testing::load;

use crate::common::root_only;

const BUDGET: u64 = 64 * 1024 * 1024;

#[test]
fn kernel_memory_at_default_capacities_is_under_64_mib() -> anyhow::Result<()> {
    root_only!("kernel_memory_at_default_capacities_is_under_64_mib");
    let mut ebpf = load::load(&Config::default())?;
    let maps = load::map_memory(&mut ebpf)?;
    let total: u64 = maps.iter().map(|(_, b)| b).sum();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let listing: Vec<String> = maps
        .iter()
        .map(|(n, b)| format!("{n} {:.1} MiB", mib(*b)))
        .collect();
    eprintln!(
        "kernel memory {:.1} MiB: {}",
        mib(total),
        listing.join(", ")
    );
    assert!(
        first_probe_slots(SOURCES_CAPACITY) + suspects(SOURCES_CAPACITY) >= 1 << 20,
        "at least 1,048,576 sources by default"
    );
    assert!(
        maps.iter().any(|(n, _)| n == "FIRST_PROBES") && maps.len() >= 10,
        "every map is counted: {listing:?}"
    );
    assert!(
        total <= BUDGET,
        "{:.1} MiB is over the 64 MiB budget: {listing:?}",
        mib(total)
    );
    Ok(())
}
