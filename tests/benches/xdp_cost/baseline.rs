//! The program before prefix slots (issue 22's "today": commit
//! `$SCANNER_BASELINE_COMMIT`, whose object `cargo xtask bench` builds from
//! that tree into `$SCANNER_BASELINE_ELF`), loaded here beside this build's
//! with the same map sizes, so that each packet is measured on both in the
//! same rounds. Its CONFIG is the start of today's layout (fields have only
//! been appended since), written from the same settings.

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, ProgramArray},
    programs::Xdp,
};
use scanner_common::{
    Config,
    names::{
        ADMITTED_MAP, BLOCK_CAPACITY, BLOCKLIST_MAP, CONFIG_MAP, FIRST_PROBES_CAPACITY,
        FIRST_PROBES_MAP, PORTS_CAPACITY, PORTS_MAP, PREFIXES_CAPACITY, PREFIXES_MAP, SOURCES_MAP,
        SUSPECTS_CAPACITY,
    },
};

/// CONFIG's size in the baseline: today's fields up to `hash_seed`.
const OLD_CONFIG: usize = 72;

/// The baseline's CONFIG value: the first bytes of today's.
#[derive(Clone, Copy)]
#[repr(C)]
struct OldConfig([u8; OLD_CONFIG]);

// SAFETY: a plain byte array, no padding.
unsafe impl aya::Pod for OldConfig {}

/// The baseline program, loaded, with its id for `bpftool prog run`.
pub(crate) struct Baseline {
    pub ebpf: Ebpf,
    pub id: u32,
    pub commit: String,
}

/// The baseline, when `cargo xtask bench` built it; None otherwise (the
/// reason is on stderr and in BENCHMARKS.md).
pub(crate) fn load() -> anyhow::Result<Option<Baseline>> {
    let Some(path) = std::env::var_os("SCANNER_BASELINE_ELF") else {
        return Ok(None);
    };
    let commit = std::env::var("SCANNER_BASELINE_COMMIT").unwrap_or_else(|_| "?".to_owned());
    let object = std::fs::read(&path).with_context(|| format!("reading {path:?}"))?;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(BLOCKLIST_MAP, BLOCK_CAPACITY)
        .map_max_entries(FIRST_PROBES_MAP, FIRST_PROBES_CAPACITY)
        .map_max_entries(SOURCES_MAP, SUSPECTS_CAPACITY)
        .map_max_entries(PORTS_MAP, PORTS_CAPACITY)
        .map_max_entries(PREFIXES_MAP, PREFIXES_CAPACITY)
        .load(&object)
        .context("loading the baseline object")?;
    for name in [scanner_userspace::testing::load::PROGRAM, "scanner_admit"] {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("the baseline has no program {name}"))?
            .try_into()?;
        program
            .load()
            .with_context(|| format!("verifying the baseline's {name}"))?;
    }
    let admit: &mut Xdp = ebpf
        .program_mut("scanner_admit")
        .context("scanner_admit")?
        .try_into()?;
    let admit = admit.fd()?.try_clone()?;
    ProgramArray::try_from(ebpf.map_mut(ADMITTED_MAP).context("ADMITTED")?)?.set(0, &admit, 0)?;
    let id = crate::program_id(&mut ebpf, scanner_userspace::testing::load::PROGRAM)?;
    let mut base = Baseline { ebpf, id, commit };
    base.write_config(&Config::default())?;
    Ok(Some(base))
}

impl Baseline {
    /// Writes `config` (with FIRST_PROBES' size and a seed, as the loader
    /// does) as the baseline's CONFIG.
    pub(crate) fn write_config(&mut self, config: &Config) -> anyhow::Result<()> {
        let slots = match self.ebpf.map(FIRST_PROBES_MAP) {
            Some(aya::maps::Map::Array(data)) => data.info()?.max_entries(),
            _ => bail!("the baseline has no FIRST_PROBES array"),
        };
        let config = Config {
            first_probe_slots: slots,
            hash_seed: 0x9e37_79b9_7f4a_7c15,
            ..*config
        };
        let mut bytes = [0u8; OLD_CONFIG];
        // SAFETY: Config is repr(C) plain data of 96 bytes with no padding
        // (asserted in scanner-common); its first 72 are copied.
        let all: [u8; size_of::<Config>()] = unsafe { std::mem::transmute(config) };
        bytes.copy_from_slice(&all[..OLD_CONFIG]);
        let mut array: Array<&mut MapData, OldConfig> =
            Array::try_from(self.ebpf.map_mut(CONFIG_MAP).context("CONFIG")?)
                .context("the baseline's CONFIG is not the expected 72 bytes")?;
        array.set(0, OldConfig(bytes), 0)?;
        Ok(())
    }
}

/// One packet on both programs: ns per packet.
pub(crate) struct Row {
    pub name: &'static str,
    pub ours: f64,
    pub base: f64,
}

/// Every case on this build's program (`ours`, loaded in `ebpf`) and the
/// baseline's, taking turns within each round, each program's maps set
/// up alike (the open port, the block, the prime, a new source each run).
pub(crate) fn measure(
    ebpf: &mut Ebpf,
    ours: u32,
    base: &mut Baseline,
    cases: &[crate::Case],
    fresh: &Config,
) -> anyhow::Result<Vec<Row>> {
    use scanner_userspace::testing::load;
    crate::prepare(&mut base.ebpf)?;
    let mut rows = Vec::new();
    for case in cases {
        crate::set_blocked(ebpf, case.blocked)?;
        crate::set_blocked(&mut base.ebpf, case.blocked)?;
        if case.fresh {
            load::write_config(ebpf, fresh)?;
            base.write_config(fresh)?;
        }
        if let Some(prime) = &case.prime {
            crate::run_once(ours, prime)?;
            crate::run_once(base.id, prime)?;
        }
        let ns = crate::costs(&[ours, base.id], &case.frame)?;
        if case.fresh {
            load::write_config(ebpf, &Config::default())?;
            base.write_config(&Config::default())?;
        }
        rows.push(Row {
            name: case.name,
            ours: ns[0],
            base: ns[1],
        });
    }
    Ok(rows)
}

/// The section: the table, or why there is none.
pub(crate) fn markdown(
    md: &mut String,
    rows: Result<&[Row], &str>,
    commit: &str,
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    writeln!(md, "\n## Beside the program before prefix slots\n")?;
    let rows = match rows {
        Ok(rows) => rows,
        Err(why) => {
            writeln!(md, "Not measured in this run: {why}.")?;
            return Ok(());
        }
    };
    writeln!(
        md,
        "The XDP program of commit {commit} (the last before single-probe sources were \
         gathered by prefix: issue 22's \"today\"), built from that tree by `cargo xtask \
         bench`, loaded with the same map sizes and settings, and measured on the same \
         frames in the same rounds as this build's (the two taking turns).\n"
    )?;
    writeln!(
        md,
        "| packet | this build (ns) | before prefix slots (ns) | this / before |\n| --- | ---: | ---: | ---: |"
    )?;
    for r in rows {
        writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.2}x |",
            r.name,
            r.ours,
            r.base,
            r.ours / r.base.max(1.0)
        )?;
    }
    Ok(())
}
