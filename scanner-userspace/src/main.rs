use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use scanner_userspace::{
    cli::{Cli, Command},
    daemon,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs and human text go to stderr; stdout carries only the event stream.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SCANNER_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();

    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(daemon::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("scanner: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
