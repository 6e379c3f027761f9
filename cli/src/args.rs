//! The command line, with clap's derive.

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::duration;

/// Run commands under a Redlock distributed lock on N independent Redis nodes, check
/// the nodes' health, and see who holds a lock.
#[derive(Debug, Parser)]
#[command(name = "redlock", version)]
#[command(after_help = "Exit statuses: see `redlock run --help` and cli/README.md.")]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) manager: ManagerArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How to reach the nodes and lock on them: the settings of the library's builder.
/// Every one may come before or after the subcommand.
#[derive(Debug, Args)]
#[command(next_help_heading = "Nodes and lock settings (before or after the subcommand)")]
pub(crate) struct ManagerArgs {
    /// The lock nodes, comma-separated: redis://[user:password@]host:port[/db], each an
    /// independent master (3 or 5 of them).
    #[arg(
        long,
        env = "REDLOCK_NODES",
        value_name = "URL,URL,...",
        value_delimiter = ',',
        global = true,
        hide_env_values = true
    )]
    pub(crate) nodes: Vec<String>,

    /// Bound on each request to one node, connecting included: each run of the tool
    /// connects afresh, so its first request does too.
    #[arg(
        long,
        value_name = "D",
        value_parser = duration::parse,
        default_value = DEFAULT_NODE_TIMEOUT,
        global = true
    )]
    pub(crate) node_timeout: Duration,

    /// Bound on making a connection to one node [library default: 1s].
    #[arg(long, value_name = "D", value_parser = duration::parse, global = true)]
    pub(crate) connect_timeout: Option<Duration>,

    /// Attempts after the first one, when no --wait is given [library default: 10].
    #[arg(long, value_name = "N", global = true)]
    pub(crate) retry_count: Option<u32>,

    /// Pause between two attempts [library default: 200ms].
    #[arg(long, value_name = "D", value_parser = duration::parse, global = true)]
    pub(crate) retry_delay: Option<Duration>,

    /// Upper bound of a random extra pause after each attempt [library default: 200ms].
    #[arg(long, value_name = "D", value_parser = duration::parse, global = true)]
    pub(crate) retry_jitter: Option<Duration>,

    /// Clock drift allowed, as a fraction of the ttl, in [0, 1) [library default: 0.01].
    #[arg(long, value_name = "F", global = true)]
    pub(crate) drift_factor: Option<f64>,

    /// A prefix put before every resource name to make its Redis key [default: none].
    #[arg(long, value_name = "PREFIX", global = true)]
    pub(crate) key_prefix: Option<String>,

    /// Put in front of the stored owner value, so that inspect (and GET on a node) shows
    /// who holds a lock: ASCII letters, digits and -_.@/ [default for run:
    /// redlock@<host>/<pid>].
    #[arg(long, value_name = "LABEL", global = true)]
    pub(crate) owner_label: Option<String>,

    /// Hand out fencing tokens (REDLOCK_TOKEN for run); diagnose then holds the nodes'
    /// persistence to fencing's standard.
    #[arg(long, global = true)]
    pub(crate) fencing: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Take the lock, run CMD with it kept alive, release it when CMD exits.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Check the nodes' configuration (exit 0 healthy, 1 unhealthy).
    Diagnose(OutputArgs),
    /// Show who holds RESOURCE, on how many nodes, for how long. A snapshot, never a lock
    /// check.
    Inspect(InspectArgs),
}

const RUN_AFTER_HELP: &str = "\
The command's environment: REDLOCK_RESOURCE, REDLOCK_VALUE (the owner value stored on
the nodes, <owner label>:<uuid>), REDLOCK_TOKEN (with --fencing). SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to
redlock are forwarded to the command.

Exit status:
  the command's own      it ran and exited (128 + n if signal n ended it)
  75                     the lock was not obtained (busy with --no-wait, --wait ran out,
                         too few nodes answered); the command did not run
  76                     the lock was lost while the command ran; it was stopped
  2                      bad usage or configuration
  125                    redlock itself failed
  126, 127               the command could not be run, or was not found";

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// How long the nodes keep the lock; it is extended in the background every third
    /// of it while the command runs.
    #[arg(long, value_name = "D", value_parser = duration::parse, default_value = "30s")]
    pub(crate) ttl: Duration,

    /// Give up (exit 75) if the lock is not obtained within this long [default: 10s,
    /// unless --retry-count is given].
    #[arg(long, value_name = "D", value_parser = duration::parse, conflicts_with = "no_wait")]
    pub(crate) wait: Option<Duration>,

    /// One attempt: exit 75 at once if the lock is busy.
    #[arg(long)]
    pub(crate) no_wait: bool,

    /// After the lock is lost and the command got SIGTERM, how long to wait before
    /// SIGKILL.
    #[arg(long, value_name = "D", value_parser = duration::parse, default_value = "10s")]
    pub(crate) kill_after: Duration,

    /// The lock's name (its Redis key, after --key-prefix).
    pub(crate) resource: String,

    /// The command and its arguments, after `--`.
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub(crate) command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The lock's name (its Redis key, after --key-prefix).
    pub(crate) resource: String,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// The tool's default node timeout, above the library's 50 ms, which assumes a warm
/// connection: a run of the tool connects afresh, and its first request (a `--no-wait`
/// attempt, an inspect) waits for the connection within the node timeout. Still a
/// small part of any sensible ttl, and below the 1 s diagnose warns about.
pub(crate) const DEFAULT_NODE_TIMEOUT: &str = "250ms";

/// How long `run` waits for the lock when no --wait and no --retry-count are given.
/// Long enough to ride out a holder's short critical section or a node restart, short
/// enough that a job stuck behind a lock held for hours says so within seconds.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_the_separator() {
        let cli = Cli::try_parse_from([
            "redlock",
            "--nodes",
            "redis://a:1,redis://b:2",
            "run",
            "--ttl",
            "5s",
            "--fencing",
            "job",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .expect("parses");
        assert_eq!(cli.manager.nodes, ["redis://a:1", "redis://b:2"]);
        assert!(cli.manager.fencing);
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.ttl, Duration::from_secs(5));
        assert_eq!(run.resource, "job");
        assert_eq!(run.command, ["sh", "-c", "exit 3"]);
        assert_eq!(run.kill_after, Duration::from_secs(10));
    }

    #[test]
    fn wait_and_no_wait_exclude_each_other() {
        let err = Cli::try_parse_from([
            "redlock",
            "run",
            "--wait",
            "1s",
            "--no-wait",
            "r",
            "--",
            "true",
        ])
        .expect_err("conflict");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn a_bad_duration_is_a_usage_error() {
        let err = Cli::try_parse_from(["redlock", "run", "--ttl", "30", "r", "--", "true"])
            .expect_err("no unit");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("30s"), "{err}");
    }
}
