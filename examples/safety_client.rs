//! One lock client as its own OS process, for the safety suite (`tests/it/process.rs`):
//! the test can SIGSTOP it like a GC pause while it acquires or holds a lock.
//!
//! It acquires `--resource` once (fenced, with the manager's retries), holds it for
//! `--hold-ms`, releases, and writes its history (`harness::history` format, one shared
//! machine-wide clock) to `--history`. It prints `attempting` before the acquisition and
//! `acquired <token>` or `failed <reason>` after, so the test can time its signals.
//!
//! ```text
//! safety_client --nodes redis://127.0.0.1:1,redis://127.0.0.1:2,redis://127.0.0.1:3 \
//!   --resource r --ttl-ms 500 --hold-ms 1000 --client 7 --history /tmp/h7.txt
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio_redlock::harness::history::{instant_ns, EventKind, Recorder};
use tokio_redlock::Redlock;

struct Args {
    nodes: Vec<String>,
    resource: String,
    ttl: Duration,
    hold: Duration,
    client: u32,
    history: PathBuf,
}

fn parse() -> Result<Args, String> {
    let mut nodes = None;
    let mut resource = "r".to_owned();
    let mut ttl = Duration::from_millis(500);
    let mut hold = Duration::from_millis(100);
    let mut client = 1;
    let mut history = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let ms = |v: String| {
            v.parse()
                .map(Duration::from_millis)
                .map_err(|e| format!("{e}"))
        };
        match flag.as_str() {
            "--nodes" => nodes = Some(value()?.split(',').map(str::to_owned).collect()),
            "--resource" => resource = value()?,
            "--ttl-ms" => ttl = ms(value()?)?,
            "--hold-ms" => hold = ms(value()?)?,
            "--client" => client = value()?.parse().map_err(|e| format!("{e}"))?,
            "--history" => history = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        nodes: nodes.ok_or("--nodes is required")?,
        resource,
        ttl,
        hold,
        client,
        history: history.ok_or("--history is required")?,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("safety_client: {e}");
            std::process::exit(2);
        }
    };
    let redlock = match Redlock::builder()
        .nodes(&args.nodes)
        .fencing(true)
        .retry_count(5)
        .retry_delay(Duration::from_millis(50))
        .node_timeout(Duration::from_secs(2))
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("safety_client: {e}");
            std::process::exit(2);
        }
    };
    let rec = Recorder::new();
    let (client, op, resource) = (args.client, 1, args.resource.as_str());
    println!("attempting");
    let _ = std::io::stdout().flush();
    rec.record(client, op, resource, EventKind::Start);
    match redlock.acquire(resource, args.ttl).await {
        Ok(guard) => {
            rec.record(
                client,
                op,
                resource,
                EventKind::Acquired {
                    valid_until_ns: instant_ns(guard.valid_until()),
                    token: guard.fencing_token(),
                },
            );
            println!("acquired {}", guard.fencing_token().unwrap_or(0));
            let _ = std::io::stdout().flush();
            // The critical section; the test may stop the process in here.
            tokio::time::sleep(args.hold).await;
            rec.record(client, op, resource, EventKind::Released);
            let _ = guard.release().await;
        }
        Err(e) => {
            rec.record(
                client,
                op,
                resource,
                EventKind::Failed {
                    reason: e.to_string(),
                },
            );
            println!("failed {e}");
        }
    }
    if let Err(e) = rec.history().write_file(&args.history) {
        eprintln!(
            "safety_client: cannot write {}: {e}",
            args.history.display()
        );
        std::process::exit(1);
    }
}
