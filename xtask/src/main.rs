//! `cargo xtask`: set up the machine, build, run, test, and show the demo.

mod baseline;
mod demo;
mod fuzz;
mod install;
mod lint;
mod setup;
mod shell;
mod steps;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer and operator tasks for scanner.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what the build, the tests and the benchmarks need
    /// (Debian/Ubuntu, as root): packages, nightly rust-src, bpf-linker,
    /// cargo-deb. Fast when all is present. `demo` installs only the build
    /// and nmap, `lint` only the build.
    Setup,
    /// Build the scanner binary (with its embedded XDP program).
    Build {
        /// Optimised build in target/release.
        #[arg(long)]
        release: bool,
    },
    /// Build and run the daemon: cargo xtask run -- run --iface eth0
    Run {
        /// Arguments for `scanner`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up if needed, lint (as `lint`), then run every unit and
    /// integration test (integration tests need root; extra arguments go to
    /// `cargo test`).
    Test {
        /// Skip the lint step (CI runs `lint` on its own first).
        #[arg(long)]
        no_lint: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check formatting (nightly rustfmt) and run clippy with warnings as
    /// errors over the host crates and over the XDP program for the BPF target.
    Lint,
    /// Two namespaces, the detector on one, a real nmap scan from the other:
    /// watch the scan get detected.
    Demo,
    /// Install the binary, the systemd unit (packaging/scanner.service), the
    /// example config (/etc/scanner/scanner.toml, kept if present), the
    /// logrotate and sysusers files, shell completions and man pages; creates
    /// group scanner. `uninstall` undoes it.
    Install {
        /// Installation prefix for the binary and shared files.
        #[arg(long, default_value = "/usr")]
        prefix: std::path::PathBuf,
        /// Stage everything under this folder instead of /.
        #[arg(long)]
        destdir: Option<std::path::PathBuf>,
    },
    /// Undo `cargo xtask install`: stop and disable the service, remove what
    /// the install wrote (its manifest lists it). Configuration files stay.
    Uninstall {
        /// The prefix the install used.
        #[arg(long, default_value = "/usr")]
        prefix: std::path::PathBuf,
        /// The folder the install staged under.
        #[arg(long)]
        destdir: Option<std::path::PathBuf>,
        /// Also remove the configuration files, the history, the events
        /// files, the pinned state and the group scanner if the install
        /// created it.
        #[arg(long)]
        purge: bool,
    },
    /// Build a .deb (cargo-deb, installed on first use) with the same files
    /// as `install`; written to target/debian.
    Package,
    /// Measure the XDP program's per-packet cost beside XDP_PASS and
    /// xdp-filter at several map fills, veth throughput (trafgen), the
    /// daemon's CPU and poll time, and time to detect beside scanlogd;
    /// writes BENCHMARKS.md (needs root).
    Bench,
    /// Everything at once for a while (bench tooling, not CI): benign
    /// clients, scans of every family, spoofed floods, Local API restarts,
    /// SIGHUPs, an interface that comes and goes, restarts and a kill -9;
    /// checks that every scan is reported once, every block enforced and
    /// lifted, counts agree, nothing panics and memory stays flat; writes
    /// the soak's section of BENCHMARKS.md (needs root).
    Soak {
        /// How long, in minutes (at least 5).
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// Coverage-guided fuzzing (cargo-fuzz, nightly) of the parsers that
    /// read what others wrote: every target in scanner-userspace/fuzz, or
    /// one; then the corpus is minimised and a table says what each run
    /// did. `cargo test` replays the committed corpora.
    Fuzz {
        /// One target (control_request, config_file, lapi_answers,
        /// proc_files, history_rows, packet); all when absent.
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 600)]
        time: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::setup(setup::Need::Everything),
        Task::Build { release } => shell::build_scanner(release).map(drop),
        Task::Run { args } => run(&args),
        Task::Test { no_lint, args } => test(no_lint, &args),
        Task::Lint => setup::setup(setup::Need::Build).and_then(|()| lint::lint()),
        Task::Demo => demo::demo(),
        Task::Bench => bench(),
        Task::Soak { minutes } => soak(minutes),
        Task::Install { prefix, destdir } => install::install(&prefix, destdir.as_deref()),
        Task::Uninstall {
            prefix,
            destdir,
            purge,
        } => install::uninstall(&prefix, destdir.as_deref(), purge),
        Task::Package => install::package().map(drop),
        Task::Fuzz { target, time } => fuzz::fuzz(target.as_deref(), time),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let bin = shell::build_scanner(false)?;
    let err = std::process::Command::new(&bin).args(args).exec();
    Err(anyhow::Error::from(err).context(format!("executing {}", bin.display())))
}

fn bench() -> anyhow::Result<()> {
    setup::setup(setup::Need::Everything)?;
    if !scanner_tests::privilege::is_root() {
        anyhow::bail!("benchmarks load XDP programs: run `cargo xtask bench` as root");
    }
    // The daemon benchmarks run the release binary.
    let bin = shell::build_scanner(true)?;
    let mut cmd = shell::cargo();
    cmd.args(["bench", "--package", "scanner-tests", "--bench", "xdp_cost"])
        .env("BENCH_OUT", shell::workspace_root())
        .env("SCANNER_BIN", bin);
    // The program before prefix slots, measured beside this one; the
    // bench says so when it could not be built.
    match baseline::elf(baseline::COMMIT) {
        Ok(elf) => {
            cmd.env("SCANNER_BASELINE_ELF", elf);
        }
        Err(e) => eprintln!("xtask: bench: no baseline program: {e:#}"),
    }
    cmd.env("SCANNER_BASELINE_COMMIT", baseline::short(baseline::COMMIT));
    // The previous commit's program, beside this one in the steps table: a
    // change to the data path shows against it in the same rounds, even
    // where the machine's noise moves every figure.
    match baseline::previous().and_then(|c| Ok((baseline::elf(&c)?, c))) {
        Ok((elf, commit)) => {
            cmd.env("SCANNER_PREVIOUS_ELF", elf);
            cmd.env("SCANNER_PREVIOUS_COMMIT", baseline::short(&commit));
        }
        Err(e) => eprintln!("xtask: bench: no previous commit's program: {e:#}"),
    }
    cmd.env("SCANNER_STEPS_ELF", steps::elf()?);
    shell::status(&mut cmd)
}

fn soak(minutes: u64) -> anyhow::Result<()> {
    setup::setup(setup::Need::Everything)?;
    if !scanner_tests::privilege::is_root() {
        anyhow::bail!("the soak loads XDP programs: run `cargo xtask soak` as root");
    }
    if minutes < 5 {
        anyhow::bail!("--minutes {minutes}: a soak needs at least 5 minutes");
    }
    let bin = shell::build_scanner(true)?;
    let mut cmd = shell::cargo();
    cmd.args(["bench", "--package", "scanner-tests", "--bench", "soak"])
        .env("BENCH_OUT", shell::workspace_root())
        .env("SOAK_MINUTES", minutes.to_string())
        .env("SCANNER_BIN", bin);
    shell::status(&mut cmd)
}

fn test(no_lint: bool, args: &[String]) -> anyhow::Result<()> {
    setup::setup(setup::Need::Everything)?;
    if !no_lint {
        lint::lint()?;
    }
    let bin = shell::build_scanner(false)?;
    if !scanner_tests::privilege::is_root() {
        eprintln!(
            "xtask: not root: the integration tests that need network namespaces and XDP will be skipped"
        );
    }
    let mut cmd = shell::cargo();
    cmd.arg("test").args(args).env("SCANNER_BIN", &bin);
    // Integration tests mostly wait on the network and on slow scans; run
    // more of them at once than there are cores.
    if std::env::var_os("RUST_TEST_THREADS").is_none() {
        cmd.env("RUST_TEST_THREADS", "16");
    }
    shell::test_status(&mut cmd)
}
