//! Hostile and broken nodes: each counts as a failed vote with its cause, never panics,
//! never holds up the healthy nodes, and leaks neither tasks nor connections.
//!
//! The hostile node is a small TCP server on loopback, run on a thread and runtime of its
//! own so that its tasks are not counted with the client's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_redlock::Redlock;

use crate::support::*;

const TTL: Duration = Duration::from_secs(10);
/// The node timeout of these tests: long enough for a loaded CI machine's real nodes,
/// short enough that 200 attempts against a silent node stay quick.
const NODE_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Answers every command with bytes that are not RESP.
    Garbage,
    /// Starts a bulk reply, then closes the connection.
    CloseMidReply,
    /// Announces a 512 MiB bulk string, then trickles a byte every 10 ms.
    Huge,
    /// Answers the connection handshake, then every command with this error line.
    Error(&'static str),
    /// Accepts and never answers.
    Silent,
}

struct Hostile {
    url: String,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The command names in `buf` that are complete, consuming them. RESP arrays of bulk
/// strings only, which is all a client sends.
fn commands(buf: &mut Vec<u8>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let mut pos = 0;
        let line = |pos: &mut usize| -> Option<String> {
            let end = buf[*pos..].windows(2).position(|w| w == b"\r\n")? + *pos;
            let l = String::from_utf8_lossy(&buf[*pos..end]).into_owned();
            *pos = end + 2;
            Some(l)
        };
        let Some(head) = line(&mut pos) else {
            return out;
        };
        let Some(n) = head.strip_prefix('*').and_then(|n| n.parse::<usize>().ok()) else {
            buf.clear();
            return out;
        };
        let mut name = None;
        let mut complete = true;
        for _ in 0..n {
            let Some(len) = line(&mut pos).and_then(|l| l.strip_prefix('$')?.parse::<usize>().ok())
            else {
                complete = false;
                break;
            };
            if buf.len() < pos + len + 2 {
                complete = false;
                break;
            }
            name.get_or_insert_with(|| {
                String::from_utf8_lossy(&buf[pos..pos + len]).to_uppercase()
            });
            pos += len + 2;
        }
        if !complete {
            return out;
        }
        buf.drain(..pos);
        out.push(name.unwrap_or_default());
    }
}

async fn serve(mut sock: TcpStream, behaviour: Behaviour) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        for name in commands(&mut buf) {
            let reply: Vec<u8> = match behaviour {
                Behaviour::Silent => continue,
                Behaviour::Garbage => b"\x00\xffNOT REDIS\r\n".to_vec(),
                Behaviour::CloseMidReply => {
                    let _ = sock.write_all(b"$10\r\nabc").await;
                    return;
                }
                Behaviour::Huge => {
                    if sock.write_all(b"$536870912\r\n").await.is_err() {
                        return;
                    }
                    // Until the client hangs up.
                    loop {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        if sock.write_all(b"x").await.is_err() {
                            return;
                        }
                    }
                }
                Behaviour::Error(line) => {
                    if name == "CLIENT" || name == "HELLO" {
                        b"+OK\r\n".to_vec()
                    } else {
                        format!("{line}\r\n").into_bytes()
                    }
                }
            };
            if sock.write_all(&reply).await.is_err() {
                return;
            }
        }
    }
}

fn hostile(behaviour: Behaviour) -> Hostile {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let open = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let (o, a) = (open.clone(), accepted.clone());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    accept = listener.accept() => {
                        let Ok((sock, _)) = accept else { continue };
                        a.fetch_add(1, Ordering::SeqCst);
                        o.fetch_add(1, Ordering::SeqCst);
                        let o = o.clone();
                        tokio::spawn(async move {
                            serve(sock, behaviour).await;
                            o.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                }
            }
        });
        // Dropping the runtime drops every connection task and closes its socket.
    });
    Hostile {
        url,
        open,
        accepted,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Every behaviour, with a word its failure must be reported with.
const CASES: [(Behaviour, &str); 8] = [
    (Behaviour::Garbage, ""),
    (Behaviour::CloseMidReply, ""),
    (Behaviour::Huge, "no answer within"),
    (Behaviour::Silent, "no answer within"),
    (
        Behaviour::Error("-READONLY You can't write against a read only replica."),
        "READONLY",
    ),
    (
        Behaviour::Error("-LOADING Redis is loading the dataset in memory"),
        "LOADING",
    ),
    (
        Behaviour::Error("-OOM command not allowed when used memory > 'maxmemory'."),
        "OOM",
    ),
    (
        Behaviour::Error("-NOSCRIPT No matching script. Please use EVAL."),
        "NOSCRIPT",
    ),
];

#[tokio::test]
async fn each_hostile_node_is_a_failed_vote_with_its_cause() {
    let cluster = cluster(3).await;
    for (behaviour, word) in CASES {
        let bad = hostile(behaviour);
        // 3 real + the hostile one: quorum 3 stands on the real nodes alone, and is
        // reached without waiting for the hostile node.
        let redlock = builder(&cluster)
            .node(&bad.url)
            .node_timeout(NODE_TIMEOUT)
            .retry_count(0)
            .build()
            .unwrap();
        let start = Instant::now();
        let g = bounded(redlock.try_acquire("hostile", TTL))
            .await
            .unwrap_or_else(|e| panic!("{behaviour:?}: {e}"));
        let took = start.elapsed();
        g.release().await.unwrap();
        let g = bounded(redlock.acquire_many(&["hostile:a", "hostile:b"], TTL))
            .await
            .unwrap_or_else(|e| panic!("{behaviour:?}: {e}"));
        g.release().await.unwrap();
        // 1 real + the hostile one: no quorum, and the hostile node's cause is reported.
        let pair = Redlock::builder()
            .node(&cluster.urls()[0])
            .node(&bad.url)
            .node_timeout(NODE_TIMEOUT)
            .retry_count(0)
            .build()
            .unwrap();
        for err in [
            bounded(pair.try_acquire("hostile", TTL)).await.unwrap_err(),
            bounded(pair.acquire_many(&["hostile:a", "hostile:b"], TTL))
                .await
                .unwrap_err(),
        ] {
            assert!(err.is_no_quorum(), "{behaviour:?}: {err}");
            let causes = err.node_errors();
            assert_eq!(causes.len(), 1, "{behaviour:?}: {err}");
            assert_eq!(causes[0].node(), 1);
            let cause = causes[0].to_string();
            assert!(
                cause.to_lowercase().contains(&word.to_lowercase()),
                "{behaviour:?}: {cause}"
            );
            assert!(!err.to_string().is_empty());
        }
        // The healthy nodes did not wait for the hostile one to time out (the first
        // connect to the real nodes is in `took` too, hence the margin).
        assert!(
            took < NODE_TIMEOUT * 5,
            "{behaviour:?}: took {took:?} with 3 healthy nodes"
        );
        let report = bounded(redlock.diagnose()).await;
        let finding = report
            .findings()
            .iter()
            .find(|f| f.node() == Some(3))
            .unwrap_or_else(|| panic!("{behaviour:?}: no finding for the hostile node: {report}"));
        assert_eq!(
            finding.severity(),
            tokio_redlock::diagnose::Severity::Error,
            "{report}"
        );
    }
}

/// Reads this process's data segment size (virtual), which a 512 MiB allocation would
/// show even before its pages are touched.
fn vm_data_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[tokio::test]
async fn a_huge_reply_is_not_buffered_and_times_out() {
    let bad = hostile(Behaviour::Huge);
    let redlock = Redlock::builder()
        .node(&bad.url)
        .node_timeout(NODE_TIMEOUT)
        .retry_count(0)
        .build()
        .unwrap();
    let before = vm_data_kib();
    let start = Instant::now();
    let err = bounded(redlock.try_acquire("huge", TTL)).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // The attempt and its undo each wait at most the node timeout.
    assert!(start.elapsed() < NODE_TIMEOUT * 4, "{:?}", start.elapsed());
    if let (Some(before), Some(after)) = (before, vm_data_kib()) {
        assert!(
            after.saturating_sub(before) < 256 * 1024,
            "data segment grew from {before} KiB to {after} KiB"
        );
    }
}

/// 200 acquisitions with a hostile node: the runtime's task count comes back to where
/// it was, and the client does not keep piling up connections to the hostile node.
#[tokio::test]
async fn no_task_or_connection_leak_after_200_acquisitions() {
    let cluster = cluster(3).await;
    for behaviour in [
        Behaviour::Silent,
        Behaviour::Huge,
        Behaviour::CloseMidReply,
        Behaviour::Error("-LOADING Redis is loading the dataset in memory"),
    ] {
        let bad = hostile(behaviour);
        let metrics = tokio::runtime::Handle::current().metrics();
        let without_manager = metrics.num_alive_tasks();
        let redlock = builder(&cluster)
            .node(&bad.url)
            .node_timeout(NODE_TIMEOUT)
            .connect_timeout(Duration::from_millis(200))
            .retry_count(0)
            .build()
            .unwrap();
        // Warm up: connections to the real nodes exist, so their driver tasks are in
        // the baseline.
        bounded(redlock.try_acquire("warm", TTL))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        let baseline_tasks = metrics.num_alive_tasks();
        let mut ok = 0;
        let work = async {
            for i in 0..200 {
                let name = format!("leak:{i}");
                if let Ok(g) = redlock.try_acquire(&name, TTL).await {
                    ok += 1;
                    // Half released explicitly, half by Drop.
                    if i % 2 == 0 {
                        g.release().await.unwrap();
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), work)
            .await
            .expect("200 acquisitions finish");
        assert_eq!(
            ok, 200,
            "{behaviour:?}: the 3 healthy nodes carry every lock"
        );
        // Background releases, late requests and connects all end within a few node
        // timeouts; the driver of the hostile node's current connection may remain.
        eventually(&format!("{behaviour:?}: tasks back to baseline"), || {
            let alive = metrics.num_alive_tasks();
            async move { alive <= baseline_tasks + 1 }
        })
        .await;
        let accepted = bad.accepted.load(Ordering::SeqCst);
        eventually(
            &format!("{behaviour:?}: hostile connections closed"),
            || {
                let open = bad.open.load(Ordering::SeqCst);
                async move { open <= 2 }
            },
        )
        .await;
        drop(redlock);
        eventually(
            &format!("{behaviour:?}: all tasks gone with the manager"),
            || {
                let alive = metrics.num_alive_tasks();
                async move { alive <= without_manager }
            },
        )
        .await;
        eprintln!(
            "{behaviour:?}: {without_manager} tasks without the manager, {baseline_tasks} with it, \
             {accepted} connections accepted over 200 acquisitions"
        );
    }
}

#[test]
fn command_parser_reads_pipelined_and_partial_commands() {
    let mut buf = b"*2\r\n$4\r\nPING\r\n$1\r\nx\r\n*1\r\n$3\r\nget".to_vec();
    assert_eq!(commands(&mut buf), ["PING"]);
    buf.extend_from_slice(b"\r\n");
    assert_eq!(commands(&mut buf), ["GET"]);
    assert!(buf.is_empty());
}
