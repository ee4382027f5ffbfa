//! The entry point of the `scanner` binary.

use std::{
    io::{IsTerminal as _, Write as _},
    process::ExitCode,
};

use clap::Parser as _;
use tracing_subscriber::{EnvFilter, Layer as _, layer::SubscriberExt as _};

use crate::{
    cli::{self, Cli, Command, LogTarget, commands, top},
    daemon,
    sinks::journal,
};

/// `scanner`: parses the command line, sets up logging, runs the command,
/// and turns its outcome into the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let target = match &cli.command {
        Command::Run(args) => args.log,
        _ => LogTarget::Stderr,
    };
    let to_journal = match init_logs(target) {
        Ok(j) => j,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "scanner: error: {err:#}");
            return ExitCode::from(2);
        }
    };

    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(daemon::run(args.launch(), to_journal))),
        Command::Config(args) => commands::config_command(&args),
        Command::Status(a) => commands::status(&a),
        Command::List(a) => commands::list(&a),
        Command::Block(a) => commands::block(&a),
        Command::Unblock(a) => commands::unblock(&a),
        Command::Allow(a) => commands::allow(&a),
        Command::Disallow(a) => commands::disallow(&a),
        Command::Ports(a) => commands::ports(&a),
        Command::Top(a) => top::run(&a),
        Command::History(a) => cli::history::history(&a),
        Command::Report(a) => cli::history::report_command(&a),
        Command::Completions(a) => commands::completions(&a),
        Command::Manpage(a) => commands::manpage(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `scanner list | head -1`: the reader has what it wanted.
        Err(err) if cli::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            if to_journal {
                tracing::error!("{err:#}");
            }
            // Under systemd stderr is the journal too: one line is enough.
            // Never a panic over a closed stderr either.
            if !(to_journal && stderr_is_journal()) {
                let _ = writeln!(std::io::stderr(), "scanner: error: {err:#}");
            }
            ExitCode::from(cli::exit_code(&err))
        }
    }
}

/// Whether stderr is the journal's stream: systemd names it in
/// JOURNAL_STREAM ("device:inode") when it connects stdout or stderr there.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", stderr.dev(), stderr.ino())
}

/// Logs go to stderr, or to the journal (`--log`); stdout carries only the
/// event stream. Returns whether the journal is used.
fn init_logs(target: LogTarget) -> anyhow::Result<bool> {
    let filter =
        || EnvFilter::try_from_env("SCANNER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let to_journal = journal::wanted(target, &journal::socket_path())?;
    let journald = if to_journal {
        let layer = tracing_journald::layer()
            .map_err(|e| anyhow::anyhow!("connecting to the journal: {e}"))?
            .with_syslog_identifier(journal::IDENTIFIER.to_owned());
        Some(layer.with_filter(filter()))
    } else {
        None
    };
    let stderr = (!to_journal).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .with_filter(filter())
    });
    let subscriber = tracing_subscriber::registry().with(journald).with(stderr);
    tracing::subscriber::set_global_default(subscriber)?;
    Ok(to_journal)
}
