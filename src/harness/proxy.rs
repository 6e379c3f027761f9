//! A loopback TCP fault proxy in front of one server: partition (black hole) and latency.
//!
//! Semantics:
//! - No fault: a plain read/write copy loop per direction (one state check per chunk).
//! - Partition: every byte read from either side is dropped; connections stay open and new
//!   ones are accepted but get nothing. Pending delayed chunks are dropped too.
//! - Heal: new connections are forwarded again. Every connection that lived through a
//!   partition (opened before or during it) is **closed** at heal, and `heal()` returns once
//!   they are: its requests were lost, so resuming it would pair later replies with earlier,
//!   dropped requests. Clients see the close and reconnect.
//! - Latency `d`: each chunk is held `d` before it is written on, in each direction, so a
//!   request/reply round trip costs at least `2d`. Order is kept (FIFO per direction).
//! - Each new connection dials the server afresh, so the proxy outlives kill/restart.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::HarnessError;

/// Read buffer per direction. Redlock traffic is tiny; 16 KiB keeps bulk benchmarks to a few
/// syscalls per request.
const BUF_SIZE: usize = 16 * 1024;
/// Bound on `heal()` waiting for partitioned connections to close. Each closes as soon as its
/// task sees the state change, so this is only hit if the runtime is starved.
const HEAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. EMFILE), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    partitioned: bool,
    latency: Duration,
    /// Bumped at every partition and every heal. A connection forwards only while the epoch
    /// is the one it was opened in; so one that saw a partition never forwards again.
    epoch: u64,
}

impl Faults {
    fn forwards(&self, epoch: u64) -> bool {
        !self.partitioned && self.epoch == epoch
    }
    fn doomed(&self, epoch: u64) -> bool {
        !self.partitioned && self.epoch != epoch
    }
}

/// Open connections per epoch, so `heal()` can wait for the doomed ones to close.
type Live = Arc<watch::Sender<BTreeMap<u64, usize>>>;

/// The proxy. Dropping it aborts the accept loop and with it every connection task.
#[derive(Debug)]
pub(crate) struct Proxy {
    port: u16,
    state: watch::Sender<Faults>,
    live: Live,
    _accept: AbortOnDropHandle<()>,
}

impl Proxy {
    /// Binds a free loopback port and starts forwarding to `127.0.0.1:upstream`.
    /// Must be called within a tokio runtime.
    pub(crate) async fn start(upstream: u16) -> Result<Self, HarnessError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| HarnessError::io("could not bind the fault proxy", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| HarnessError::io("could not read the fault proxy's port", e))?
            .port();
        let (state, rx) = watch::channel(Faults::default());
        let live: Live = Arc::new(watch::Sender::new(BTreeMap::new()));
        let accept = tokio::spawn(accept_loop(listener, upstream, rx, live.clone()));
        Ok(Self {
            port,
            state,
            live,
            _accept: AbortOnDropHandle::new(accept),
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn is_partitioned(&self) -> bool {
        self.state.borrow().partitioned
    }

    pub(crate) fn latency(&self) -> Duration {
        self.state.borrow().latency
    }

    /// Starts black-holing. In effect for the next chunk of every connection when this returns.
    pub(crate) fn partition(&self) {
        self.state.send_if_modified(|s| {
            if s.partitioned {
                return false;
            }
            s.partitioned = true;
            s.epoch += 1;
            true
        });
    }

    /// Forwards again; returns once every connection that saw the partition is closed.
    pub(crate) async fn heal(&self) -> Result<(), HarnessError> {
        let mut epoch = None;
        self.state.send_if_modified(|s| {
            if !s.partitioned {
                return false;
            }
            s.partitioned = false;
            s.epoch += 1;
            epoch = Some(s.epoch);
            true
        });
        let Some(epoch) = epoch else {
            return Ok(());
        };
        let mut rx = self.live.subscribe();
        let closed = rx.wait_for(|m| m.range(..epoch).all(|(_, n)| *n == 0));
        let result = tokio::time::timeout(HEAL_TIMEOUT, closed).await;
        match result {
            Ok(_) => Ok(()),
            Err(_) => Err(HarnessError::Timeout {
                what: "closing partitioned connections at heal".into(),
                timeout: HEAL_TIMEOUT,
            }),
        }
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        self.state.send_if_modified(|s| {
            let changed = s.latency != latency;
            s.latency = latency;
            changed
        });
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: u16,
    state: watch::Receiver<Faults>,
    live: Live,
) {
    // Owned here so that aborting this task drops the set, which aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    conns.spawn(connection(client, upstream, state.clone(), live.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fault proxy accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Counts a connection in its epoch while it lives.
struct LiveGuard {
    live: Live,
    epoch: u64,
}

impl LiveGuard {
    fn new(live: Live, epoch: u64) -> Self {
        live.send_modify(|m| *m.entry(epoch).or_default() += 1);
        Self { live, epoch }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live.send_modify(|m| {
            if let Some(n) = m.get_mut(&self.epoch) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.epoch);
                }
            }
        });
    }
}

async fn connection(
    client: TcpStream,
    upstream: u16,
    mut state: watch::Receiver<Faults>,
    live: Live,
) {
    let epoch = state.borrow().epoch;
    let _guard = LiveGuard::new(live, epoch);
    // Completes when this connection must close: a partition it saw has healed.
    let mut closer_rx = state.clone();
    let closer = async move {
        let _ = closer_rx.wait_for(|s| s.doomed(epoch)).await;
    };
    if !state.borrow_and_update().forwards(epoch) {
        // Accepted during a partition: hold it, swallow what it sends, close at heal.
        tokio::select! {
            () = closer => {}
            () = drain(client) => {}
        }
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        // Server down (killed): closing the client is what a refused connect looks like.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let both = futures::future::try_join(
        pump(cr, sw, state.clone(), epoch),
        pump(sr, cw, state, epoch),
    );
    tokio::select! {
        () = closer => {}
        _ = both => {}
    }
}

async fn drain(mut client: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Copies one direction until EOF, then shuts down the write side.
async fn pump(
    mut src: OwnedReadHalf,
    mut dst: OwnedWriteHalf,
    state: watch::Receiver<Faults>,
    epoch: u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    // Chunks held back by latency, oldest first, with the instant each is due.
    let mut pending: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut eof = false;
    loop {
        let n = match pending.front() {
            // Fast path: nothing held back, just read.
            None if eof => break,
            None => src.read(&mut buf).await?,
            Some((due, _)) => {
                let due = *due;
                tokio::select! {
                    biased;
                    () = tokio::time::sleep_until(due) => {
                        if let Some((_, chunk)) = pending.pop_front() {
                            if state.borrow().forwards(epoch) {
                                dst.write_all(&chunk).await?;
                            }
                        }
                        continue;
                    }
                    r = src.read(&mut buf), if !eof => r?,
                }
            }
        };
        if n == 0 {
            eof = true;
            continue;
        }
        let (forwards, latency) = {
            let s = state.borrow();
            (s.forwards(epoch), s.latency)
        };
        if !forwards {
            // Black hole: the bytes are gone.
            continue;
        }
        if latency.is_zero() && pending.is_empty() {
            dst.write_all(&buf[..n]).await?;
        } else {
            // Behind earlier held chunks even when latency is now zero, to keep order.
            pending.push_back((Instant::now() + latency, buf[..n].to_vec()));
        }
    }
    dst.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// An echo server on a free port.
    async fn echo() -> u16 {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        port
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    const T: Duration = Duration::from_secs(2);
    const SHORT: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn forwards_and_keeps_order_under_latency() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        let got = tokio::time::timeout(T, roundtrip(&mut s, b"hello")).await;
        assert_eq!(got.unwrap().unwrap(), b"hello");

        proxy.set_latency(Duration::from_millis(30));
        let start = std::time::Instant::now();
        for i in 0..10u8 {
            s.write_all(&[i]).await.unwrap();
        }
        let mut got = [0u8; 10];
        tokio::time::timeout(T, s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(60));
        assert_eq!(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

        proxy.set_latency(Duration::ZERO);
        let got = tokio::time::timeout(T, roundtrip(&mut s, b"x")).await;
        assert_eq!(got.unwrap().unwrap(), b"x");
    }

    #[tokio::test]
    async fn partition_black_holes_and_heal_closes_old_connections() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut old = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        assert_eq!(roundtrip(&mut old, b"a").await.unwrap(), b"a");

        proxy.partition();
        assert!(proxy.is_partitioned());
        assert!(tokio::time::timeout(SHORT, roundtrip(&mut old, b"b"))
            .await
            .is_err());
        let mut during = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        assert!(tokio::time::timeout(SHORT, roundtrip(&mut during, b"c"))
            .await
            .is_err());

        tokio::time::timeout(T, proxy.heal())
            .await
            .unwrap()
            .unwrap();
        // Both were closed at heal: a read sees EOF (or reset), never data.
        for s in [&mut old, &mut during] {
            let mut b = [0u8; 1];
            let r = tokio::time::timeout(T, s.read(&mut b)).await.unwrap();
            assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        }
        let mut fresh = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        let got = tokio::time::timeout(T, roundtrip(&mut fresh, b"d")).await;
        assert_eq!(got.unwrap().unwrap(), b"d");
    }

    #[tokio::test]
    async fn heal_without_partition_keeps_connections() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        proxy.heal().await.unwrap();
        let got = tokio::time::timeout(T, roundtrip(&mut s, b"z")).await;
        assert_eq!(got.unwrap().unwrap(), b"z");
    }
}
