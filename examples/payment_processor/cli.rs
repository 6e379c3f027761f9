//! The command line: the coordinator's options and the worker processes' own.

use std::time::Duration;

use super::worker::WorkerSpec;
use super::Config;

/// The command line, in full.
pub(crate) const USAGE: &str = "\
payment_processor: workers race to charge payments; the Redlock lock makes each charge happen once

USAGE:
    cargo run --example payment_processor -- [OPTIONS]

OPTIONS:
    --payments N       payments to process                     [default: 200]
    --workers N        workers, each with its own Redlock      [default: 8]
    --processes K      run the workers as K OS processes        [default: 1]
    --chaos            pause, kill and partition lock nodes while it runs
    --no-lock          the same workers without the lock (shows double charges)
    --nodes URL,...    real lock nodes (else REDLOCK_NODES, else 5 local servers)
    --store-url URL    the payments store (else a local server)
    --timeout SECS     stop the workers after this long       [default: 45]
    --quiet            no progress lines
    -h, --help         this text

The last line of the output is `double charges: N`. The exit status is 1 when, with
the lock on, a payment was charged twice or left unprocessed; 130 after Ctrl-C.";

/// What to do, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Print [`USAGE`].
    Help,
    /// Coordinate a run.
    Run(Config),
    /// Be one of the worker processes of a run (`--worker-process`, internal).
    Worker(WorkerSpec),
}

/// Parses the arguments after the program name. `env_nodes` is `REDLOCK_NODES`, used
/// when `--nodes` is not given.
pub(crate) fn parse(
    args: impl IntoIterator<Item = String>,
    env_nodes: Option<String>,
) -> Result<Command, String> {
    let mut cfg = Config::default();
    let mut worker_mode = false;
    let mut prefix = None;
    let mut process = 0;
    let mut pick_among = None;
    let mut nodes = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value; see --help"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--payments" => cfg.payments = number(&arg, &value(&arg)?)?,
            "--workers" => cfg.workers = number(&arg, &value(&arg)?)?,
            "--processes" => cfg.processes = number(&arg, &value(&arg)?)?,
            "--timeout" => cfg.timeout = Duration::from_secs(number(&arg, &value(&arg)?)? as u64),
            "--chaos" => cfg.chaos = true,
            "--no-lock" => cfg.lock = false,
            "--quiet" => cfg.progress = false,
            "--nodes" => nodes = Some(value(&arg)?),
            "--store-url" => cfg.store_url = Some(value(&arg)?),
            "--worker-process" => worker_mode = true,
            "--prefix" => prefix = Some(value(&arg)?),
            "--process" => process = number(&arg, &value(&arg)?)?,
            "--pick-among" => pick_among = Some(number(&arg, &value(&arg)?)?),
            other => return Err(format!("unknown argument `{other}`; see --help")),
        }
    }
    if let Some(list) = nodes.or(env_nodes) {
        cfg.nodes = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if cfg.nodes.is_empty() {
            return Err(
                "--nodes/REDLOCK_NODES is empty; give comma-separated redis:// URLs".into(),
            );
        }
    }
    for (name, n) in [
        ("--payments", cfg.payments),
        ("--workers", cfg.workers),
        ("--processes", cfg.processes),
    ] {
        if n == 0 {
            return Err(format!("{name} must be at least 1"));
        }
    }
    if cfg.processes > cfg.workers {
        return Err(format!(
            "--processes {} is more than --workers {}: each process needs a worker",
            cfg.processes, cfg.workers
        ));
    }
    if cfg.chaos && !cfg.nodes.is_empty() && !worker_mode {
        return Err("--chaos needs the local lock nodes; leave out --nodes/REDLOCK_NODES".into());
    }
    if worker_mode {
        let (Some(store_url), Some(prefix), false) = (cfg.store_url, prefix, cfg.nodes.is_empty())
        else {
            return Err("--worker-process needs --nodes, --store-url and --prefix".into());
        };
        return Ok(Command::Worker(WorkerSpec {
            nodes: cfg.nodes,
            store_url,
            prefix,
            lock: cfg.lock,
            chaos: cfg.chaos,
            workers: cfg.workers,
            pick_among: pick_among.unwrap_or(cfg.workers),
            process,
        }));
    }
    Ok(Command::Run(cfg))
}

fn number(name: &str, value: &str) -> Result<usize, String> {
    value
        .parse()
        .map_err(|_| format!("{name} takes a whole number, not `{value}`"))
}

/// The command line of a worker process; [`parse`] turns it back into `spec`.
pub(crate) fn worker_args(spec: &WorkerSpec) -> Vec<String> {
    let mut args = vec![
        "--worker-process".to_owned(),
        "--nodes".to_owned(),
        spec.nodes.join(","),
        "--store-url".to_owned(),
        spec.store_url.clone(),
        "--prefix".to_owned(),
        spec.prefix.clone(),
        "--workers".to_owned(),
        spec.workers.to_string(),
        "--process".to_owned(),
        spec.process.to_string(),
        "--pick-among".to_owned(),
        spec.pick_among.to_string(),
    ];
    if !spec.lock {
        args.push("--no-lock".to_owned());
    }
    if spec.chaos {
        args.push("--chaos".to_owned());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_and_flags() {
        let Command::Run(cfg) = parse(args(""), None).unwrap() else {
            panic!()
        };
        assert_eq!(cfg, Config::default());
        let Command::Run(cfg) = parse(
            args("--payments 40 --workers 4 --processes 2 --chaos --quiet"),
            None,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!((cfg.payments, cfg.workers, cfg.processes), (40, 4, 2));
        assert!(cfg.chaos && !cfg.progress && cfg.lock);
    }

    #[test]
    fn nodes_from_flag_or_env() {
        let Command::Run(cfg) = parse(args(""), Some("redis://a, redis://b,".into())).unwrap()
        else {
            panic!()
        };
        assert_eq!(cfg.nodes, ["redis://a", "redis://b"]);
        let Command::Run(cfg) = parse(args("--nodes redis://c"), Some("redis://a".into())).unwrap()
        else {
            panic!()
        };
        assert_eq!(cfg.nodes, ["redis://c"]);
    }

    #[test]
    fn refuses_impossible_settings() {
        for bad in [
            "--workers 0",
            "--workers",
            "--payments x",
            "--processes 3 --workers 2",
            "--bogus",
        ] {
            assert!(parse(args(bad), None).is_err(), "{bad}");
        }
        assert!(parse(args("--chaos --nodes redis://a"), None).is_err());
        assert!(parse(args("--worker-process --nodes redis://a"), None).is_err());
    }

    #[test]
    fn worker_args_round_trip() {
        let spec = WorkerSpec {
            nodes: vec!["redis://a".into(), "redis://b".into()],
            store_url: "redis://s".into(),
            prefix: "p".into(),
            lock: false,
            chaos: true,
            workers: 3,
            pick_among: 8,
            process: 1,
        };
        assert_eq!(
            parse(worker_args(&spec), None).unwrap(),
            Command::Worker(spec)
        );
    }
}
