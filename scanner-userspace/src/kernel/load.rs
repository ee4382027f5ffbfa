//! Load the embedded XDP object, configure it, and attach it to interfaces.

use std::io;

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, MapError, ProgramArray},
    programs::{ProgramError, Xdp, xdp},
};
use scanner_common::{
    Config,
    names::{
        ADMISSIONS_MAP, ADMITTED_MAP, ALLOWLIST_MAP, BLOCK_CACHE_MAP, BLOCK_CAPACITY,
        BLOCKLIST_MAP, BLOCKS_EMPTY_MAP, CONFIG_MAP, COUNTERS_MAP, EVENTS_MAP, FIRST_PROBES_MAP,
        GATHERED_MAP, PINNED_MAPS, PORT_BITS_MAP, PORT_HITS_MAP, PORTS_MAP, PREFIX_SLOTS_MAP,
        PREFIXED_MAP, PREFIXES_MAP, PROTECTED_MAP, REPLAYED_MAP, RULES_GENERATION_MAP,
        SOURCES_CAPACITY, SOURCES_MAP, first_probe_slots, port_pairs, prefix_slots, prefixes,
        suspects,
    },
    step,
};
use thiserror::Error;

use super::clock::{self, ClockError};

/// The XDP object, built by build.rs (aya-build) for the BPF target.
pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/scanner"));

/// Name of the `#[xdp]` function in scanner-ebpf.
pub const PROGRAM: &str = "scanner";
/// The program `scanner` tail-calls to count the probe that admitted a
/// source (never attached; it sits in the ADMITTED program array).
pub(crate) const ADMIT_PROGRAM: &str = "scanner_admit";
/// The program `scanner` tail-calls to make a just-admitted source's entry
/// and count its first probe there (it sits in the REPLAYED array).
pub(crate) const REPLAY_PROGRAM: &str = "scanner_replay";
/// The program that counts a new source's first probe into an admitted
/// prefix (see `scanner_common::gather`), tail-called through GATHERED.
pub(crate) const GATHER_PROGRAM: &str = "scanner_gather";
/// The program that counts an admitted source's first trials into its
/// prefix, tail-called through PREFIXED.
pub(crate) const PREFIX_PROGRAM: &str = "scanner_prefix";

const PERMISSION_HINT: &str =
    "run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (e.g. with AmbientCapabilities)";

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("permission denied while {during}: {PERMISSION_HINT}")]
    Permission { during: &'static str },
    #[error(
        "the kernel verifier rejected the XDP program ({io_error}); last lines of the verifier log:\n{tail}"
    )]
    Verifier { io_error: io::Error, tail: String },
    #[error("this kernel cannot load the XDP program ({during})")]
    Kernel {
        during: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("map {0} is missing from the embedded XDP object (stale build?)")]
    MissingMap(&'static str),
    #[error("program {0} is missing from the embedded XDP object (stale build?)")]
    MissingProgram(&'static str),
    #[error("cannot set the probe clock")]
    Clock(#[source] ClockError),
    #[error("cannot pin the XDP link of {iface} at {path}")]
    PinLink {
        iface: String,
        path: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot attach XDP to {iface} in {mode} mode")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "another XDP program is attached to {iface}: {other}; scanner does not replace it (detach it first, e.g. `ip link set dev {iface} xdp off`)"
    )]
    Busy { iface: String, other: String },
}

crate::named::named! {
    /// How to attach: native (in the driver), skb (generic, any interface), or
    /// auto (native, falling back to skb).
    pub(crate) enum XdpMode {
        Auto = "auto",
        Native = "native",
        Skb = "skb",
    }
}

/// An interface the daemon watches.
pub(crate) struct Attached {
    pub name: String,
    pub mode: AttachedMode,
    /// Its index while attached; None once it has been removed.
    pub index: Option<u32>,
}

crate::named::named! {
    /// The mode an interface ended up attached in.
    pub(crate) enum AttachedMode {
        Native = "native",
        Skb = "skb",
    }
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Whether effective capabilities `cap_eff` (the CapEff mask of
/// /proc/self/status) allow loading and attaching XDP: CAP_NET_ADMIN, and
/// CAP_BPF or its predecessor CAP_SYS_ADMIN.
pub(crate) fn capable(cap_eff: u64) -> bool {
    let has = |cap: u32| cap_eff & (1 << cap) != 0;
    has(CAP_NET_ADMIN) && (has(CAP_BPF) || has(CAP_SYS_ADMIN))
}

/// Fails early, with the capabilities to grant, when this process could not
/// load or attach the program anyway.
pub(crate) fn check_privileges() -> Result<(), LoadError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    match cap_eff {
        Some(caps) if !capable(caps) => Err(LoadError::Permission {
            during: "checking capabilities",
        }),
        _ => Ok(()),
    }
}

/// Loads the object into the kernel and writes `config` into its CONFIG map.
/// Nothing is attached yet.
pub fn load(config: &Config) -> Result<Ebpf, LoadError> {
    load_with_cap(config, BLOCK_CAPACITY)
}

/// [`load`], with room for `block_cap` blocks in BLOCKLIST.
pub fn load_with_cap(config: &Config, block_cap: u32) -> Result<Ebpf, LoadError> {
    let mut ebpf = load_pinned(config, &Capacity::with_blocks(block_cap), None)?;
    arm_admission(&mut ebpf)?;
    Ok(ebpf)
}

/// [`load`] of `object`, an XDP object built with the timing variants
/// (scanner-ebpf's `steps` feature; the bench's), set to pass every packet
/// right after step `stop_after` (see `scanner_common::step`).
pub fn load_variant(config: &Config, object: &[u8], stop_after: u32) -> Result<Ebpf, LoadError> {
    let capacity = Capacity::with_blocks(BLOCK_CAPACITY);
    let mut ebpf = load_object(object, config, &capacity, None, Some(stop_after))?;
    arm_admission(&mut ebpf)?;
    Ok(ebpf)
}

/// [`load`] of `object`, another build of this program whose maps are laid
/// out as this one's (the bench measures the last commit's beside this).
pub fn load_build(config: &Config, object: &[u8]) -> Result<Ebpf, LoadError> {
    let capacity = Capacity::with_blocks(BLOCK_CAPACITY);
    let mut ebpf = load_object(object, config, &capacity, None, None)?;
    arm_admission(&mut ebpf)?;
    Ok(ebpf)
}

/// Map sizes chosen at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capacity {
    pub blocks: u32,
    pub sources: u32,
}

impl Capacity {
    pub(crate) fn with_blocks(blocks: u32) -> Self {
        Self {
            blocks,
            sources: SOURCES_CAPACITY,
        }
    }
}

/// [`load_with_cap`], reusing (or creating) the maps pinned in `pins`. A map
/// already pinned keeps the size it was created with.
pub(crate) fn load_pinned(
    config: &Config,
    capacity: &Capacity,
    pins: Option<&std::path::Path>,
) -> Result<Ebpf, LoadError> {
    load_object(OBJECT, config, capacity, pins, None)
}

/// Loads `object` (`stop_after`: a timing variant's step, see
/// [`load_variant`]).
fn load_object(
    object: &[u8],
    config: &Config,
    capacity: &Capacity,
    pins: Option<&std::path::Path>,
    stop_after: Option<u32>,
) -> Result<Ebpf, LoadError> {
    raise_memlock_limit();
    let mut loader = EbpfLoader::new();
    if let Some(stop_after) = &stop_after {
        loader.override_global(step::STOP_AFTER, stop_after, true);
    }
    loader.map_max_entries(BLOCKLIST_MAP, capacity.blocks);
    // One setting sizes every per-source map (see scanner_common::names).
    loader.map_max_entries(FIRST_PROBES_MAP, first_probe_slots(capacity.sources));
    loader.map_max_entries(PREFIX_SLOTS_MAP, prefix_slots(capacity.sources));
    loader.map_max_entries(SOURCES_MAP, suspects(capacity.sources));
    loader.map_max_entries(PORTS_MAP, port_pairs(capacity.sources));
    loader.map_max_entries(PREFIXES_MAP, prefixes(capacity.sources));
    if let Some(pins) = pins {
        for name in PINNED_MAPS {
            loader.map_pin_path(name, pins.join(name));
        }
    }
    let mut ebpf = loader
        .load(object)
        .map_err(|e| classify(e, "creating the BPF maps"))?;
    for name in [
        ADMISSIONS_MAP,
        ADMITTED_MAP,
        GATHERED_MAP,
        REPLAYED_MAP,
        PREFIXED_MAP,
        FIRST_PROBES_MAP,
        SOURCES_MAP,
        PREFIXES_MAP,
        PREFIX_SLOTS_MAP,
        PORTS_MAP,
        PORT_BITS_MAP,
        COUNTERS_MAP,
        PORT_HITS_MAP,
        CONFIG_MAP,
        EVENTS_MAP,
        ALLOWLIST_MAP,
        BLOCKLIST_MAP,
        BLOCKS_EMPTY_MAP,
        BLOCK_CACHE_MAP,
        RULES_GENERATION_MAP,
        PROTECTED_MAP,
    ] {
        if ebpf.map(name).is_none() {
            return Err(LoadError::MissingMap(name));
        }
    }
    let verifier = |e: ProgramError| match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } if !is_permission(&io_error) => LoadError::Verifier {
            io_error,
            tail: tail(&verifier_log.to_string(), 20),
        },
        other => classify(other, "loading the XDP program"),
    };
    program(&mut ebpf)?.load().map_err(verifier)?;
    for name in [
        ADMIT_PROGRAM,
        GATHER_PROGRAM,
        REPLAY_PROGRAM,
        PREFIX_PROGRAM,
        clock::CLOCK_PROGRAM,
    ] {
        let second: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(LoadError::MissingProgram(name))?
            .try_into()
            .map_err(|e: ProgramError| classify(e, "reading the program"))?;
        second.load().map_err(verifier)?;
    }
    write_config(&mut ebpf, config)?;
    Ok(ebpf)
}

/// Puts this load's `scanner_admit` into the ADMITTED program array,
/// `scanner_gather` into GATHERED, `scanner_replay` into REPLAYED and
/// `scanner_prefix` into PREFIXED, where the attached `scanner` tail-calls
/// them. The arrays are pinned and shared with a program still attached
/// from an earlier daemon, so the daemon does this only once the maps the
/// new programs read (open ports, protected sources) are filled, just
/// before it attaches.
pub(crate) fn arm_admission(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    // Each program before those that tail-call it (scanner_replay calls
    // scanner_admit, which calls scanner_prefix): an older program still
    // attached never reaches an empty slot through a new one.
    for (program, array) in [
        (PREFIX_PROGRAM, PREFIXED_MAP),
        (ADMIT_PROGRAM, ADMITTED_MAP),
        (REPLAY_PROGRAM, REPLAYED_MAP),
        (GATHER_PROGRAM, GATHERED_MAP),
    ] {
        let second: &mut Xdp = ebpf
            .program_mut(program)
            .ok_or(LoadError::MissingProgram(program))?
            .try_into()
            .map_err(|e: ProgramError| classify(e, "reading the program"))?;
        let fd = second
            .fd()
            .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
            .map_err(|e| classify(e, "reading the program"))?;
        let slot = ebpf.map_mut(array).ok_or(LoadError::MissingMap(array))?;
        ProgramArray::try_from(slot)
            .and_then(|mut slot| slot.set(0, &fd, 0))
            .map_err(|e| {
                classify(
                    e,
                    "filling a program array (ADMITTED, GATHERED, REPLAYED, PREFIXED)",
                )
            })?;
    }
    Ok(())
}

/// Writes `config` into the CONFIG map (also used to change it while running),
/// with the fields that belong to the loaded maps rather than to the
/// settings: FIRST_PROBES' and PREFIX_SLOTS' real sizes (a pinned map keeps
/// the size it was created with) and the slot hash's secret seed (tied to
/// FIRST_PROBES, so slots stay where they are across reloads and restarts).
pub fn write_config(ebpf: &mut Ebpf, config: &Config) -> Result<(), LoadError> {
    let prefix_slots = match ebpf.map(PREFIX_SLOTS_MAP) {
        Some(aya::maps::Map::Array(data)) => data
            .info()
            .map_err(|e| classify(e, "reading the PREFIX_SLOTS map's size"))?
            .max_entries(),
        _ => return Err(LoadError::MissingMap(PREFIX_SLOTS_MAP)),
    };
    let (slots, first_id) = match ebpf.map(FIRST_PROBES_MAP) {
        Some(aya::maps::Map::Array(data)) => {
            let info = data
                .info()
                .map_err(|e| classify(e, "reading the FIRST_PROBES map's size"))?;
            (info.max_entries(), info.id())
        }
        _ => return Err(LoadError::MissingMap(FIRST_PROBES_MAP)),
    };
    let (tick_ns, clock_origin_ns) = clock::calibrate(ebpf).map_err(|e| match e {
        ClockError::Run(e) => classify(
            e,
            "reading the kernel's clocks (a test run of scanner_clock)",
        ),
        other => LoadError::Clock(other),
    })?;
    let map = ebpf
        .map_mut(CONFIG_MAP)
        .ok_or(LoadError::MissingMap(CONFIG_MAP))?;
    let mut array: Array<_, Config> =
        Array::try_from(map).map_err(|e| classify(e, "opening the CONFIG map"))?;
    let seed = match array.get(&0, 0) {
        Ok(current) if current.hash_seed != 0 => current.hash_seed,
        _ => seed_for(first_id),
    };
    let config = Config {
        first_probe_slots: slots,
        prefix_slots,
        hash_seed: seed,
        tick_ns,
        clock_origin_ns,
        ..*config
    };
    array
        .set(0, config, 0)
        .map_err(|e: MapError| classify(e, "writing the CONFIG map"))
}

/// Kernel memory of every map the loaded XDP program uses, by map name, as
/// the kernel accounts it (`memlock` in each map's fdinfo: what `bpftool
/// map show` prints). Read from this process's own map descriptors: opening
/// a map by id (BPF_MAP_GET_FD_BY_ID) needs CAP_SYS_ADMIN, which the
/// systemd unit does not grant.
pub fn map_memory(ebpf: &mut Ebpf) -> Result<Vec<(String, u64)>, LoadError> {
    use std::os::fd::AsFd as _;
    let program = program(ebpf)?;
    let fd = program
        .fd()
        .map_err(|e| classify(e, "reading the program's maps"))?;
    let ids =
        crate::kernel::xdp_owner::program_map_ids(fd.as_fd()).map_err(|e| LoadError::Kernel {
            during: "reading the program's maps",
            source: Box::new(e),
        })?;
    let mut out: Vec<(u32, String, u64)> = Vec::with_capacity(ids.len());
    // A directory that cannot be listed counts nothing, as a map it lists
    // that closes meanwhile does.
    for entry in std::fs::read_dir("/proc/self/fdinfo")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Some((id, bytes)) = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|text| map_fdinfo(&text))
        else {
            continue;
        };
        if !ids.contains(&id) || out.iter().any(|(seen, ..)| *seen == id) {
            continue;
        }
        // The name, from the map itself; a descriptor reused by another
        // object since its fdinfo was read tells another id, and is skipped.
        let info =
            dup_fd(fd).and_then(|owned| aya::maps::MapData::from_fd(owned).ok()?.info().ok());
        if let Some(info) = info.filter(|info| info.id() == id) {
            out.push((id, info.name_as_str().unwrap_or("?").to_owned(), bytes));
        }
    }
    Ok(out
        .into_iter()
        .map(|(_, name, bytes)| (name, bytes))
        .collect())
}

/// A BPF map descriptor's (map_id, memlock) from its fdinfo text; None for
/// any other descriptor.
fn map_fdinfo(text: &str) -> Option<(u32, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let id = field("map_id:")?.parse().ok()?;
    let bytes = field("memlock:").and_then(|v| v.parse().ok()).unwrap_or(0);
    Some((id, bytes))
}

/// A descriptor of our own that refers to what `fd` refers to now.
fn dup_fd(fd: std::os::fd::RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: fcntl on any number is sound: a closed one answers EBADF.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    // SAFETY: a descriptor fcntl just created, owned by nothing else.
    (dup >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(dup) })
}

/// The slot hash's seed for the FIRST_PROBES map with id `map_id`: the
/// same for as long as that (pinned) map lives, so a restarted daemon finds
/// the first probes where the last one's program put them, and secret from
/// the network: it mixes in this boot's random id (/proc/sys/kernel/random/
/// boot_id), which a remote sender never sees. A new map, or a reboot, gets
/// a new seed.
fn seed_for(map_id: u32) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    boot.trim().hash(&mut h);
    map_id.hash(&mut h);
    h.finish() | 1
}

/// The loaded XDP program.
pub(crate) fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    ebpf.program_mut(PROGRAM)
        .ok_or(LoadError::MissingProgram(PROGRAM))?
        .try_into()
        .map_err(|e: ProgramError| classify(e, "reading the program"))
}

/// Attaches the loaded program to `iface`; returns the mode and the link's
/// id. `auto` tries native XDP first and falls back to generic (skb) XDP,
/// saying so.
pub(crate) fn attach_link(
    ebpf: &mut Ebpf,
    iface: &str,
    mode: XdpMode,
) -> Result<(AttachedMode, aya::programs::xdp::XdpLinkId), LoadError> {
    let program = program(ebpf)?;
    let attach_error = |mode: AttachedMode, e: ProgramError| {
        if chain_has_permission_error(&e) {
            return LoadError::Permission {
                during: "attaching XDP",
            };
        }
        if chain_has_errno(&e, &[libc::EBUSY, libc::EEXIST]) {
            // Attached through netlink, or it would have been named already.
            return LoadError::Busy {
                iface: iface.to_owned(),
                other: format!("one attached without a BPF link (`ip link show {iface}` names it)"),
            };
        }
        LoadError::Attach {
            iface: iface.to_owned(),
            mode: mode.as_str(),
            source: e,
        }
    };
    match mode {
        XdpMode::Native => program
            .attach(iface, xdp::XdpMode::Driver)
            .map(|id| (AttachedMode::Native, id))
            .map_err(|e| attach_error(AttachedMode::Native, e)),
        XdpMode::Skb => program
            .attach(iface, xdp::XdpMode::Skb)
            .map(|id| (AttachedMode::Skb, id))
            .map_err(|e| attach_error(AttachedMode::Skb, e)),
        XdpMode::Auto => match program.attach(iface, xdp::XdpMode::Driver) {
            Ok(id) => Ok((AttachedMode::Native, id)),
            // Missing privileges, or the hook is taken: skb mode fails alike.
            Err(e)
                if chain_has_permission_error(&e)
                    || chain_has_errno(&e, &[libc::EBUSY, libc::EEXIST]) =>
            {
                Err(attach_error(AttachedMode::Native, e))
            }
            Err(native) => {
                tracing::warn!(
                    iface,
                    "native XDP unavailable ({:#}); falling back to skb (generic) mode",
                    anyhow::Error::from(native)
                );
                program
                    .attach(iface, xdp::XdpMode::Skb)
                    .map(|id| (AttachedMode::Skb, id))
                    .map_err(|e| attach_error(AttachedMode::Skb, e))
            }
        },
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it so large
/// maps load there too. Harmless where memory cgroups account it instead.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            io::Error::last_os_error()
        );
    }
}

fn classify<E>(e: E, during: &'static str) -> LoadError
where
    E: std::error::Error + Send + Sync + 'static,
{
    if chain_has_permission_error(&e) {
        LoadError::Permission { during }
    } else {
        LoadError::Kernel {
            during,
            source: Box::new(e),
        }
    }
}

/// Missing capabilities give EPERM. (EACCES is the verifier's "rejected".)
fn is_permission(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EPERM)
}

/// Whether any error in the chain is EPERM/EACCES.
fn chain_has_permission_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && is_permission(io)
        {
            return true;
        }
        if let Some(EbpfError::MapError(MapError::CreateError { io_error, .. })) =
            err.downcast_ref::<EbpfError>()
            && is_permission(io_error)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Whether any error in the chain is an OS error with one of `codes`.
fn chain_has_errno(e: &(dyn std::error::Error + 'static), codes: &[i32]) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && io.raw_os_error().is_some_and(|c| codes.contains(&c))
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The last `n` non-empty lines of `log`.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_fdinfo_gives_its_id_and_memory() {
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t1\nkey_size:\t4\nvalue_size:\t8\nmax_entries:\t1024\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t86016\nmap_id:\t42\nfrozen:\t0\n";
        assert_eq!(map_fdinfo(map), Some((42, 86016)));
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t6\nprog_id:\t7\nmemlock:\t4096\n";
        assert_eq!(map_fdinfo(prog), None);
        assert_eq!(map_fdinfo("pos:\t0\nflags:\t02\n"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\n\nc\nd\n", 2), "c\nd");
        assert_eq!(tail("only", 5), "only");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn permission_errors_are_found_in_the_chain() {
        let e = io::Error::from_raw_os_error(libc::EPERM);
        assert!(chain_has_permission_error(&e));
        let e = io::Error::from_raw_os_error(libc::EINVAL);
        assert!(!chain_has_permission_error(&e));
        assert!(matches!(
            classify(io::Error::from_raw_os_error(libc::EPERM), "x"),
            LoadError::Permission { during: "x" }
        ));
        assert!(!chain_has_permission_error(&io::Error::from_raw_os_error(
            libc::EACCES
        )));
    }

    #[test]
    fn capabilities_needed_are_net_admin_and_bpf() {
        let bit = |c: u32| 1u64 << c;
        assert!(capable(bit(CAP_NET_ADMIN) | bit(CAP_BPF)));
        assert!(capable(bit(CAP_NET_ADMIN) | bit(CAP_SYS_ADMIN)));
        assert!(!capable(bit(CAP_BPF)));
        assert!(!capable(bit(CAP_NET_ADMIN)));
        assert!(!capable(0));
        assert!(capable(u64::MAX));
    }

    #[test]
    fn the_embedded_object_is_an_elf_file() {
        assert_eq!(&OBJECT[..4], b"\x7fELF");
    }

    /// The timing variants (scanner-ebpf's `steps` feature) are the bench's
    /// own object: the daemon's has neither their global nor their
    /// programs, so no packet pays for an early-stop check.
    #[test]
    fn the_embedded_object_has_no_timing_variant() {
        for name in [step::STOP_AFTER.as_bytes(), b"cost_clock"] {
            assert!(
                !OBJECT.windows(name.len()).any(|w| w == name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }
}
