//! `redlock`: run a command under a Redlock distributed lock on N independent Redis
//! nodes, check the nodes' health, and see who holds a lock. See cli/README.md for the
//! usage and the exit statuses.
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

mod args;
mod duration;
mod manager;
mod report;
mod run;
mod status;

use args::{Cli, Command};
use status::Failure;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(usage_error(&e)),
    };
    let status = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(dispatch(cli)),
        Err(e) => Err(Failure::internal(format!(
            "could not start the async runtime: {e}; check the process's limits"
        ))),
    };
    match status {
        Ok(status) => ExitCode::from(status),
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::from(failure.status)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Run(args) => {
            let label = cli
                .manager
                .owner_label
                .clone()
                .unwrap_or_else(manager::default_label);
            let redlock = manager::build(&cli.manager, Some(label.clone()))?;
            run::run(redlock, args, &label, cli.manager.retry_count.is_some()).await
        }
        Command::Diagnose(out) => {
            let redlock = manager::build(&cli.manager, None)?;
            Ok(report::diagnose(&redlock, out.json).await)
        }
        Command::Inspect(args) => {
            let redlock = manager::build(&cli.manager, None)?;
            report::inspect(&redlock, &args.resource, args.output.json).await
        }
    }
}

/// Prints clap's verdict and returns the status: help and version go to stdout with 0;
/// a usage error is one line on stderr with 2, like every other failure of the tool.
fn usage_error(e: &clap::Error) -> u8 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // Help to stdout; a closed stdout (`redlock --help | head`) is no failure.
            let _ = e.print();
            0
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `redlock` alone: the help, on stderr, as a usage error.
            let _ = e.print();
            status::USAGE
        }
        _ => {
            // clap's message without its usage block, on one line; its tip, when it has
            // one, is often the fix (`to pass '--flag' as a value, use '-- --flag'`).
            let rendered = e.to_string();
            let message = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .map(|l| l.trim_start_matches("error: ").trim_start_matches("tip: "))
                .collect::<Vec<_>>()
                .join(" ");
            let failure = Failure::usage(format!("{message}; see `redlock --help`"));
            eprintln!("{failure}");
            status::USAGE
        }
    }
}
