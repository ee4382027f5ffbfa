//! Where each nanosecond of the probe path goes: timing variants of the XDP
//! program that pass the packet right after each step
//! (`scanner_common::step`, an object built with scanner-ebpf's `steps`
//! feature), measured on the probe frames in the same rounds as the
//! daemon's program and XDP_PASS; and the size of each variant
//! (xlated instructions, jited bytes) with the helper calls in it, which
//! show a change even where times are noisy; and the whole program beside
//! the previous commit's, in the same rounds.

use std::{collections::BTreeMap, fmt::Write as _, process::Command};

use anyhow::Context as _;
use aya::Ebpf;
use scanner_common::{Config, step};
use scanner_userspace::testing::load;

use crate::{BENIGN, Case, costs, prepare, program_id, run_once, set_blocked};

/// A program's size as the kernel holds it.
pub(crate) struct Size {
    /// BPF instructions after the verifier's rewrites (dead code removed,
    /// map lookups inlined).
    pub xlated: u64,
    /// Bytes of machine code.
    pub jited: u64,
    /// Instructions the verifier walked to accept it, over every path
    /// (`verified_insns`; the kernel refuses a program past 1,000,000).
    pub verified: u64,
    /// Calls by name (helpers, and the map functions the verifier calls
    /// directly), as `bpftool prog dump xlated` shows them.
    pub calls: BTreeMap<String, usize>,
}

/// The steps object's programs that price one building block ten times.
const BLOCKS: [(&str, &str); 4] = [
    (
        "cost_call",
        "a helper call (`bpf_ktime_get_coarse_ns`, which reads a variable)",
    ),
    (
        "cost_clock",
        "the precise clock (`bpf_ktime_get_ns`), which a decision reads (every probe did before the probe clock)",
    ),
    (
        "cost_jiffies",
        "the timer tick (`bpf_jiffies64`, a load once the verifier has rewritten it)",
    ),
    (
        "cost_lookup",
        "a hash-map lookup of a source key, empty bucket",
    ),
];

pub(crate) struct Steps {
    /// What one of each building block costs (ns).
    pub blocks: Vec<(&'static str, f64)>,
    /// What the least useful XDP program costs above XDP_PASS (ns): one
    /// per-CPU counter bumped, then XDP_PASS (`count_and_pass`).
    pub count_and_pass: f64,
    /// The variants' names, then "whole program".
    pub variants: Vec<&'static str>,
    /// Per case: its name and ns for each variant, then XDP_PASS.
    pub rows: Vec<(&'static str, Vec<f64>, f64)>,
    pub sizes: Vec<Size>,
    /// The whole build's programs: the attached one and the tail-called.
    pub programs: Vec<(&'static str, Size)>,
    /// The previous commit's whole program, measured in the same rounds.
    pub previous: Option<Previous>,
}

/// The previous commit's daemon program (`$SCANNER_PREVIOUS_ELF`, built by
/// `cargo xtask bench` from `$SCANNER_PREVIOUS_COMMIT`), measured beside
/// this build's: a change to the data path shows against it even when the
/// machine's noise moves every figure of a run.
pub(crate) struct Previous {
    pub commit: String,
    /// Per row of [`Steps::rows`]: ns.
    pub ns: Vec<f64>,
    pub size: Size,
}

/// The previous commit's program, loaded by this build's loader; None (and
/// why, on stderr) when there is none, or when its maps differ from this
/// build's (a change of layout: nothing to compare in place).
fn load_previous() -> Option<(Ebpf, u32, String)> {
    let path = std::env::var_os("SCANNER_PREVIOUS_ELF")?;
    let commit = std::env::var("SCANNER_PREVIOUS_COMMIT").unwrap_or_else(|_| "?".to_owned());
    let loaded = std::fs::read(&path)
        .with_context(|| format!("reading {path:?}"))
        .and_then(|object| Ok(load::load_build(&Config::default(), &object)?))
        .and_then(|mut ebpf| {
            let id = program_id(&mut ebpf, load::PROGRAM)?;
            prepare(&mut ebpf)?;
            Ok((ebpf, id))
        });
    match loaded {
        Ok((ebpf, id)) => Some((ebpf, id, commit)),
        Err(e) => {
            eprintln!("bench: the previous commit's program ({commit}) is left out: {e:#}");
            None
        }
    }
}

/// The instructions the verifier walked to accept program `id` (Debian's
/// bpftool does not print them): 0 when the kernel does not say.
fn verified(id: u32) -> u64 {
    aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .and_then(|p| p.verified_instruction_count())
        .map_or(0, u64::from)
}

/// The size of program `id`.
pub(crate) fn size(id: u32) -> anyhow::Result<Size> {
    let show = Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .context("running bpftool prog show")?;
    let json: serde_json::Value = serde_json::from_slice(&show.stdout)?;
    let dump = Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &id.to_string()])
        .output()
        .context("running bpftool prog dump xlated")?;
    let mut calls = BTreeMap::new();
    for line in String::from_utf8_lossy(&dump.stdout).lines() {
        // "  12: (85) call bpf_ktime_get_ns#125"; "call pc+N" is a call
        // within the program.
        if let Some(rest) = line.split(") call ").nth(1)
            && !rest.starts_with("pc")
        {
            let name = rest.split('#').next().unwrap_or(rest).trim().to_owned();
            *calls.entry(name).or_insert(0) += 1;
        }
    }
    Ok(Size {
        xlated: json["bytes_xlated"].as_u64().unwrap_or(0) / 8,
        jited: json["bytes_jited"].as_u64().unwrap_or(0),
        verified: verified(id),
        calls,
    })
}

/// Every variant and the whole program, loaded side by side; `pass` is
/// XDP_PASS's program id.
pub(crate) fn measure(pass: u32, cases: &[Case], fresh: &Config) -> anyhow::Result<Steps> {
    let path = std::env::var_os("SCANNER_STEPS_ELF")
        .context("SCANNER_STEPS_ELF: the steps object (run the bench with `cargo xtask bench`)")?;
    let object = std::fs::read(&path).with_context(|| format!("reading {path:?}"))?;
    let mut loaded: Vec<(Ebpf, u32)> = Vec::new();
    for (stop, _) in step::STEPS {
        let mut ebpf = load::load_variant(&Config::default(), &object, stop)?;
        let id = program_id(&mut ebpf, load::PROGRAM)?;
        prepare(&mut ebpf)?;
        loaded.push((ebpf, id));
    }
    // Last, the daemon's own program (its object has no early stops).
    let mut ebpf = load::load(&Config::default())?;
    let id = program_id(&mut ebpf, load::PROGRAM)?;
    prepare(&mut ebpf)?;
    loaded.push((ebpf, id));
    // The price of the building blocks, ten of each a run.
    let mut blocks = Vec::new();
    let count_and_pass;
    {
        let (first, _) = loaded.first_mut().context("no variant")?;
        let ids = BLOCKS
            .iter()
            .map(|(name, _)| program_id(first, name))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut with_pass = ids.clone();
        with_pass.push(program_id(first, "count_and_pass")?);
        with_pass.push(pass);
        let ns = costs(&with_pass, &cases[BENIGN].frame)?;
        let (pass_ns, rest) = ns.split_last().context("no rounds")?;
        let (count_ns, each) = rest.split_last().context("no rounds")?;
        count_and_pass = count_ns - pass_ns;
        for ((_, what), ns) in BLOCKS.iter().zip(each) {
            blocks.push((*what, (ns - pass_ns) / 10.0));
        }
    }
    let mut beside = load_previous();
    let defaults = Config::default();
    let mut rows = Vec::new();
    let mut previous_ns = Vec::new();
    // The benign packet, then the probe paths (the cases that reach
    // tracking).
    let rows_of = cases
        .iter()
        .enumerate()
        .filter(|(i, c)| *i == BENIGN || c.is_probe());
    for (_, case) in rows_of {
        let config = if case.fresh { fresh } else { &defaults };
        for (ebpf, id) in &mut loaded {
            set_up(ebpf, *id, case, config)?;
        }
        // The previous commit's program: one that cannot take this case's set-up
        // (its maps differ after all) is left out, and says why.
        if let Some((ebpf, id, commit)) = &mut beside
            && let Err(e) = set_up(ebpf, *id, case, config)
        {
            eprintln!("bench: the previous commit's program ({commit}) is left out: {e:#}");
            beside = None;
            previous_ns.clear();
        }
        let mut ids: Vec<u32> = loaded.iter().map(|(_, id)| *id).collect();
        ids.extend(beside.iter().map(|(_, id, _)| *id));
        ids.push(pass);
        let mut ns = costs(&ids, &case.frame)?;
        eprintln!("steps, {}: {ns:?}", case.name);
        let pass_ns = ns.pop().context("no rounds")?;
        if beside.is_some() {
            previous_ns.push(ns.pop().context("no rounds")?);
        }
        rows.push((case.name, ns, pass_ns));
    }
    let sizes = loaded
        .iter()
        .map(|(_, id)| size(*id))
        .collect::<anyhow::Result<_>>()?;
    // For working on the data path: the whole program as the kernel runs it.
    if let Some(file) = std::env::var_os("SCANNER_BENCH_DUMP")
        && let Some((_, id)) = loaded.last()
    {
        let dump = Command::new("bpftool")
            .args(["prog", "dump", "xlated", "id", &id.to_string()])
            .output()?;
        std::fs::write(file, dump.stdout)?;
    }
    let (whole, _) = loaded.last_mut().context("no whole program")?;
    let mut programs = Vec::new();
    for name in [
        load::PROGRAM,
        "scanner_replay",
        "scanner_admit",
        "scanner_gather",
        "scanner_prefix",
    ] {
        let id = program_id(whole, name)?;
        programs.push((name, size(id)?));
    }
    let mut variants: Vec<&'static str> = step::STEPS.iter().map(|(_, n)| *n).collect();
    variants.push("whole program");
    let previous = match beside {
        Some((_, id, commit)) => Some(Previous {
            commit,
            ns: previous_ns,
            size: size(id)?,
        }),
        None => None,
    };
    Ok(Steps {
        blocks,
        count_and_pass,
        variants,
        rows,
        sizes,
        programs,
        previous,
    })
}

/// Program `id` of `ebpf` made ready for `case`: nothing blocked, `config`
/// written, and the source made known when the case needs it.
fn set_up(ebpf: &mut Ebpf, id: u32, case: &Case, config: &Config) -> anyhow::Result<()> {
    set_blocked(ebpf, false)?;
    load::write_config(ebpf, config)?;
    if let Some(prime) = &case.prime {
        run_once(id, prime)?;
        run_once(id, &case.frame)?;
    }
    Ok(())
}

fn calls(size: &Size) -> String {
    let total: usize = size.calls.values().sum();
    let each: Vec<String> = size
        .calls
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    format!("{total} ({})", each.join(", "))
}

pub(crate) fn markdown(md: &mut String, s: &Steps) -> anyhow::Result<()> {
    writeln!(md, "\n## Where the probe path's time goes\n")?;
    writeln!(
        md,
        "Timing variants of the XDP program, each passing the packet right after one step \
         (an object built with scanner-ebpf's `steps` feature, whose read-only global \
         `STOP_AFTER` is set at load; the daemon's object has no early stop), measured on \
         the same frames in the same rounds as the daemon's whole program and XDP_PASS. Each cell is the cost up to \
         and including that step (ns); in parentheses what the step adds to the one \
         before. The steps: the parse (the per-CPU packet counter and the headers, the \
         source address left in the frame); the rules and the probe's classification (the \
         blocks-empty flag, CONFIG, the open and ignored port bitmaps, the probe clock, \
         `bpf_jiffies64`); the source's first-probe slot (the source address read, keyed \
         hash, FIRST_PROBES read); admission (a known source's entry in SOURCES; for \
         a new source, its first probe held in the slot); the walk's update (the (source, \
         port) pair, kept in the entry for a repeat of the source's last pair, as here, \
         otherwise in PORTS; the entry's counts, the trial, the thresholds); then the \
         rest of the whole program (PORT_HITS; the prefix's share of a source's first two \
         trials is another program's, `scanner_prefix`). A new source never \
         reaches the walk: its last two columns are the rest of its path (PORT_HITS and its \
         prefix's slot). The benign packet asks about no port: it leaves after the \
         classification, its source never read, and its later columns differ only by \
         noise. The ring buffer is written once per decision, never on a probe of a \
         decided or undecided source's later ports: it is not on these paths.\n"
    )?;
    writeln!(md, "| packet | XDP_PASS | {} |", s.variants.join(" | "))?;
    writeln!(md, "| --- | ---: |{}", " ---: |".repeat(s.variants.len()))?;
    for (name, ns, pass) in &s.rows {
        let mut cells = Vec::new();
        let mut before = *pass;
        for n in ns {
            cells.push(format!("{n:.0} ({:+.0})", n - before));
            before = *n;
        }
        writeln!(md, "| {name} | {pass:.0} | {} |", cells.join(" | "))?;
    }
    if let Some(p) = &s.previous {
        beside_previous(md, s, p)?;
    }
    writeln!(
        md,
        "\nThe building blocks, each priced by a program of the same object that does it ten \
         times (its cost less XDP_PASS's, over ten), in the same rounds:\n"
    )?;
    writeln!(md, "| one | ns |\n| --- | ---: |")?;
    for (what, ns) in &s.blocks {
        writeln!(md, "| {what} | {ns:.1} |")?;
    }
    writeln!(
        md,
        "\nAnd the least useful XDP program, the floor the CoNEXT 2018 XDP paper \
         compares with (13.3 ns on its machine): one per-CPU counter bumped, then \
         XDP_PASS (`count_and_pass`), on the benign packet, {:+.1} ns above XDP_PASS in \
         the same rounds.",
        s.count_and_pass
    )?;
    writeln!(
        md,
        "\nThe size of each variant as the kernel runs it (`bpftool prog show` and \
         `bpftool prog dump xlated`): BPF instructions after the verifier's rewrites, \
         bytes of machine code, the instructions the verifier walked over every path to \
         accept it (the kernel refuses a program past 1,000,000: the budget every change \
         to the data path spends), and the calls in it (helpers, and the map functions the \
         verifier calls directly in place of a lookup helper).\n"
    )?;
    sizes(md, "stops after", s.variants.iter().copied().zip(&s.sizes))?;
    writeln!(
        md,
        "\nThe whole build's programs: `scanner` is attached; the others run by tail \
         call, only for the probe that admits a source (`scanner_replay` then \
         `scanner_admit`), for a new source's probe that decides its prefix or belongs \
         to an admitted one (`scanner_gather`), and for an admitted source's first two \
         trials, counted into its prefix too (`scanner_prefix`).\n"
    )?;
    sizes(
        md,
        "program",
        s.programs.iter().map(|(name, size)| (*name, size)),
    )?;
    Ok(())
}

/// A table of program sizes, a row per (name, size).
fn sizes<'a>(
    md: &mut String,
    first: &str,
    rows: impl Iterator<Item = (&'a str, &'a Size)>,
) -> anyhow::Result<()> {
    writeln!(
        md,
        "| {first} | xlated (insns) | jited (bytes) | verified (insns) | calls |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | --- |")?;
    for (name, size) in rows {
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            size.xlated,
            size.jited,
            size.verified,
            calls(size)
        )?;
    }
    Ok(())
}

/// This build's whole program beside the previous commit's, in the same
/// rounds.
fn beside_previous(md: &mut String, s: &Steps, p: &Previous) -> anyhow::Result<()> {
    writeln!(
        md,
        "\nThis build's whole program beside the previous commit's ({}: HEAD when the \
         working tree changes the program's sources, else HEAD's parent; its object \
         built from that commit's tree by `cargo xtask bench`), in the same rounds: \
         where a run is noisy, a change to the data path still shows here.\n",
        p.commit
    )?;
    writeln!(md, "| packet | this build | {} | change |", p.commit)?;
    writeln!(md, "| --- | ---: | ---: | ---: |")?;
    for ((name, ns, _), before) in s.rows.iter().zip(&p.ns) {
        let now = ns.last().copied().unwrap_or(0.0);
        writeln!(
            md,
            "| {name} | {now:.0} | {before:.0} | {:+.0} |",
            now - before
        )?;
    }
    if let Some(whole) = s.sizes.last() {
        writeln!(md)?;
        sizes(
            md,
            "program",
            [("this build", whole), (p.commit.as_str(), &p.size)].into_iter(),
        )?;
    }
    Ok(())
}
