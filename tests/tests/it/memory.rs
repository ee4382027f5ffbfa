//! The kernel memory the maps take at default capacities, as the kernel
//! accounts it (`memlock` in each map's fdinfo, what `bpftool map show`
//! prints): under the 64 MiB a small VM must not notice, for at least
//! 1,048,576 tracked sources.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::{maps::MapInfo, programs::Xdp};
use scanner_common::{
    Config,
    names::{SOURCES_CAPACITY, first_probe_slots, suspects},
};
use scanner_userspace::kernel::load;

use crate::common::root_only;

const BUDGET: u64 = 64 * 1024 * 1024;

/// (map name, memlock bytes) of every map the XDP program uses.
fn memlock(ebpf: &mut aya::Ebpf) -> anyhow::Result<Vec<(String, u64)>> {
    let program: &mut Xdp = ebpf
        .program_mut(load::PROGRAM)
        .ok_or_else(|| anyhow::anyhow!("no program"))?
        .try_into()?;
    let ids = program.info()?.map_ids()?.unwrap_or_default();
    let mut out = Vec::new();
    for id in ids {
        let info = MapInfo::from_id(id)?;
        let fd = info.fd()?;
        let text =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))?;
        let bytes = text
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no memlock in fdinfo: {text}"))?;
        out.push((info.name_as_str().unwrap_or("?").to_owned(), bytes));
    }
    Ok(out)
}

#[test]
fn kernel_memory_at_default_capacities_is_under_64_mib() -> anyhow::Result<()> {
    root_only!("kernel_memory_at_default_capacities_is_under_64_mib");
    let mut ebpf = load::load(&Config::default())?;
    let maps = memlock(&mut ebpf)?;
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
