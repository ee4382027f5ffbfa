use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use scanner_userspace::{
    cli::{Cli, Command},
    commands,
    config::ConfigError,
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
        Command::Config(args) => daemon::config_command(&args),
        Command::Status(a) => commands::status(&a),
        Command::List(a) => commands::list(&a),
        Command::Block(a) => commands::block(&a),
        Command::Unblock(a) => commands::unblock(&a),
        Command::Allow(a) => commands::allow(&a),
        Command::Disallow(a) => commands::disallow(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("scanner: error: {err:#}");
            // Bad configuration is a usage error, like bad arguments.
            if err.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
