//! A loopback TCP fault proxy in front of one server: partitions (both ways or one way),
//! latency, and connection resets.
//!
//! Semantics:
//! - No fault: a plain read/write copy loop per direction (one state check per chunk).
//! - Partition: every byte read from either side is dropped; connections stay open and new
//!   ones are accepted but get nothing. Pending delayed chunks are dropped too.
//! - One-way partition: only the bytes of one direction are dropped, requests (client to
//!   server) or replies (server to client); the other direction still flows, so with replies
//!   dropped the server applies requests whose client never hears back. New connections are
//!   dialled and treated the same way.
//! - Heal: new connections are forwarded again. Every connection that lived through a
//!   partition of either kind (opened before or during it) is **closed** at heal, and `heal()`
//!   returns once they are: bytes of it were lost, so resuming it would pair later replies
//!   with earlier, dropped requests. Clients see the close and reconnect.
//! - Latency `d`: each chunk is held `d` before it is written on, in each direction, so a
//!   request/reply round trip costs at least `2d`. Order is kept (FIFO per direction).
//! - Reset after request: the next `n` chunks from clients are written to the server, and
//!   then their connection is reset (`SO_LINGER` 0, so the client sees `ECONNRESET`) before
//!   any reply is passed on. The server applies the request; the client cannot know.
//! - Hold requests: on every connection open when the hold starts, what the client sends is
//!   kept by the proxy instead of written to the server; connections opened later flow as
//!   usual. A held connection stays open towards the server after its client closes or
//!   resets it. Deliver: every held byte is written to the server, in order per
//!   connection, and those connections flow again (or end, if their client is gone). So a
//!   request that timed out reaches the server after everything its client sent since on
//!   a new connection: late delivery across connections, as TCP can do it for real.
//!   Replies to a client that has gone are read from the server and dropped. A
//!   partition's heal ends held connections and loses what they held.
//! - Each new connection dials the server afresh, so the proxy outlives kill/restart.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::ReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::HarnessError;
use hold::{Held, HeldCount};

mod hold;

/// Read buffer per direction. Redlock traffic is tiny; 16 KiB keeps bulk benchmarks to a few
/// syscalls per request.
const BUF_SIZE: usize = 16 * 1024;
/// Bound on `heal()` waiting for partitioned connections to close. Each closes as soon as its
/// task sees the state change, so this is only hit if the runtime is starved.
const HEAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. EMFILE), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client to server: requests.
    Requests,
    /// Server to client: replies.
    Replies,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    drop_requests: bool,
    drop_replies: bool,
    latency: Duration,
    /// Bumped at every heal that ended a partition. A connection forwards only while the
    /// generation is the one it was opened in; so one that lived through a partition never
    /// forwards again, and is closed.
    generation: u64,
    /// Connections numbered below this hold their requests back (0: none).
    hold_below: u64,
}

impl Faults {
    fn dropping(&self) -> bool {
        self.drop_requests || self.drop_replies
    }
    fn forwards(&self, generation: u64, dir: Direction) -> bool {
        let dropped = match dir {
            Direction::Requests => self.drop_requests,
            Direction::Replies => self.drop_replies,
        };
        !dropped && self.generation == generation
    }
    fn doomed(&self, generation: u64) -> bool {
        self.generation != generation
    }
    fn holds(&self, seq: u64) -> bool {
        seq < self.hold_below
    }
}

/// Open connections per generation, so `heal()` can wait for the doomed ones to close.
type Live = Arc<watch::Sender<BTreeMap<u64, usize>>>;

/// Client chunks still to be forwarded and then reset; `u32::MAX` means every one. Outside
/// the watched state because the pumps consume it.
type Resets = Arc<AtomicU32>;

/// Takes one armed reset, if any.
fn take_reset(resets: &AtomicU32) -> bool {
    resets
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            u32::MAX => Some(u32::MAX),
            n => Some(n - 1),
        })
        .is_ok()
}

/// The proxy. Dropping it aborts the accept loop and with it every connection task.
#[derive(Debug)]
pub(crate) struct Proxy {
    port: u16,
    state: watch::Sender<Faults>,
    live: Live,
    resets: Resets,
    /// The number the next accepted connection gets.
    next_seq: Arc<AtomicU64>,
    held: HeldCount,
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
        let resets: Resets = Arc::new(AtomicU32::new(0));
        let next_seq = Arc::new(AtomicU64::new(0));
        let held: HeldCount = Arc::new(watch::Sender::new(0));
        let shared = ProxyState {
            upstream,
            state: rx,
            live: live.clone(),
            resets: resets.clone(),
            held: held.clone(),
        };
        let accept = tokio::spawn(accept_loop(listener, shared, next_seq.clone()));
        Ok(Self {
            port,
            state,
            live,
            resets,
            next_seq,
            held,
            _accept: AbortOnDropHandle::new(accept),
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Whether both directions are dropped.
    pub(crate) fn is_partitioned(&self) -> bool {
        let s = self.state.borrow();
        s.drop_requests && s.drop_replies
    }

    /// Whether `dir` is dropped.
    pub(crate) fn is_dropping(&self, dir: Direction) -> bool {
        let s = self.state.borrow();
        match dir {
            Direction::Requests => s.drop_requests,
            Direction::Replies => s.drop_replies,
        }
    }

    pub(crate) fn latency(&self) -> Duration {
        self.state.borrow().latency
    }

    /// Starts black-holing both directions. In effect for the next chunk of every connection
    /// when this returns.
    pub(crate) fn partition(&self) {
        self.drop(Direction::Requests);
        self.drop(Direction::Replies);
    }

    /// Starts black-holing one direction. In effect for the next chunk when this returns.
    pub(crate) fn drop(&self, dir: Direction) {
        self.state.send_if_modified(|s| {
            let flag = match dir {
                Direction::Requests => &mut s.drop_requests,
                Direction::Replies => &mut s.drop_replies,
            };
            let changed = !*flag;
            *flag = true;
            changed
        });
    }

    /// Forwards both directions again; returns once every connection that lived through the
    /// partition is closed.
    pub(crate) async fn heal(&self) -> Result<(), HarnessError> {
        let mut generation = None;
        self.state.send_if_modified(|s| {
            if !s.dropping() {
                return false;
            }
            s.drop_requests = false;
            s.drop_replies = false;
            s.generation += 1;
            generation = Some(s.generation);
            true
        });
        let Some(generation) = generation else {
            return Ok(());
        };
        let mut rx = self.live.subscribe();
        let closed = rx.wait_for(|m| m.range(..generation).all(|(_, n)| *n == 0));
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

    /// Resets the connections of the next `n` client chunks after forwarding them
    /// (`u32::MAX`: every one until set to 0).
    pub(crate) fn set_resets(&self, n: u32) {
        self.resets.store(n, Ordering::SeqCst);
    }

    /// Client chunks still to be reset.
    pub(crate) fn resets(&self) -> u32 {
        self.resets.load(Ordering::SeqCst)
    }

    /// Starts holding back what clients send on every connection open now (see the
    /// module docs). Connections opened from now on are not held.
    pub(crate) fn hold_requests(&self) {
        let below = self.next_seq.load(Ordering::SeqCst);
        self.state.send_if_modified(|s| {
            let changed = s.hold_below != below;
            s.hold_below = below;
            changed
        });
    }

    /// Connections with requests held back now.
    pub(crate) fn held_connections(&self) -> usize {
        *self.held.borrow()
    }

    /// Ends the hold: every held byte is written to the server. Returns once it is.
    pub(crate) async fn deliver_held(&self) -> Result<(), HarnessError> {
        self.state.send_if_modified(|s| {
            let changed = s.hold_below != 0;
            s.hold_below = 0;
            changed
        });
        let mut rx = self.held.subscribe();
        let delivered = tokio::time::timeout(HEAL_TIMEOUT, rx.wait_for(|n| *n == 0))
            .await
            .map(drop);
        match delivered {
            Ok(()) => Ok(()),
            Err(_) => Err(HarnessError::Timeout {
                what: "delivering held requests".into(),
                timeout: HEAL_TIMEOUT,
            }),
        }
    }
}

/// What every connection task of one proxy shares.
#[derive(Clone)]
struct ProxyState {
    upstream: u16,
    state: watch::Receiver<Faults>,
    live: Live,
    resets: Resets,
    held: HeldCount,
}

async fn accept_loop(listener: TcpListener, shared: ProxyState, next_seq: Arc<AtomicU64>) {
    // Owned here so that aborting this task drops the set, which aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let seq = next_seq.fetch_add(1, Ordering::SeqCst);
                    conns.spawn(connection(client, seq, shared.clone()));
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

/// Counts a connection in its generation while it lives.
struct LiveGuard {
    live: Live,
    generation: u64,
}

impl LiveGuard {
    fn new(live: Live, generation: u64) -> Self {
        live.send_modify(|m| *m.entry(generation).or_default() += 1);
        Self { live, generation }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live.send_modify(|m| {
            if let Some(n) = m.get_mut(&self.generation) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.generation);
                }
            }
        });
    }
}

async fn connection(client: TcpStream, seq: u64, shared: ProxyState) {
    let ProxyState {
        upstream,
        mut state,
        live,
        resets,
        held,
    } = shared;
    let generation = state.borrow().generation;
    let _guard = LiveGuard::new(live, generation);
    // Completes when this connection must close: a partition it lived through has healed.
    let mut closer_rx = state.clone();
    let closer = async move {
        let _ = closer_rx.wait_for(|s| s.doomed(generation)).await;
    };
    let fully_partitioned = {
        let s = state.borrow_and_update();
        !s.forwards(generation, Direction::Requests) && !s.forwards(generation, Direction::Replies)
    };
    if fully_partitioned {
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
    let (mut client, mut server) = (client, server);
    // Borrowed halves: unlike owned ones they do not shut down (send a FIN) on drop, so a
    // reset closes the client socket with nothing but a RST.
    let (cr, cw) = client.split();
    let (sr, sw) = server.split();
    // Set by the request pump before it forwards a chunk it will reset after: from then on
    // no reply may reach the client.
    let tripped = Arc::new(AtomicBool::new(false));
    let requests = Pump {
        dir: Direction::Requests,
        state: state.clone(),
        generation,
        seq,
        tripped: tripped.clone(),
        resets: resets.clone(),
        held: Held::new(held.clone()),
    };
    let replies = Pump {
        dir: Direction::Replies,
        state,
        generation,
        seq,
        tripped,
        resets,
        held: Held::new(held),
    };
    let both = futures::future::try_join(requests.run(cr, sw), replies.run(sr, cw));
    tokio::select! {
        () = closer => {}
        _ = both => {}
    }
}

/// Whether a write failed because the peer closed or reset its socket.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

async fn drain(mut client: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// One direction of one connection.
struct Pump {
    dir: Direction,
    state: watch::Receiver<Faults>,
    generation: u64,
    /// The connection's number, for the hold.
    seq: u64,
    tripped: Arc<AtomicBool>,
    resets: Resets,
    /// Requests held back (the request pump only).
    held: Held,
}

impl Pump {
    /// Copies one direction until EOF, then shuts down the write side.
    async fn run<W: AsyncWrite + Unpin>(
        mut self,
        mut src: ReadHalf<'_>,
        mut dst: W,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; BUF_SIZE];
        // Chunks held back by latency, oldest first, with the instant each is due.
        let mut pending: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
        let mut eof = false;
        loop {
            if !self.held.is_empty() && !self.holding() {
                // The hold is over: what it kept goes first.
                let chunk = self.held.take();
                self.emit(&src, &mut dst, &chunk).await?;
            }
            let n = match pending.front() {
                // Fast path: nothing held back, just read.
                None if eof && self.held.is_empty() => break,
                None if self.held.is_empty() => src.read(&mut buf).await?,
                // Requests held: wait for the end of the hold too. A client that closes
                // or resets meanwhile ends only its side; the held bytes still go.
                None => {
                    tokio::select! {
                        r = src.read(&mut buf), if !eof => r.unwrap_or(0),
                        changed = self.state.changed() => {
                            if changed.is_err() {
                                break;
                            }
                            continue;
                        }
                    }
                }
                Some((due, _)) => {
                    let due = *due;
                    tokio::select! {
                        biased;
                        () = tokio::time::sleep_until(due) => {
                            if let Some((_, chunk)) = pending.pop_front() {
                                self.forward(&src, &mut dst, &chunk).await?;
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
            let latency = self.state.borrow().latency;
            if latency.is_zero() && pending.is_empty() {
                self.forward(&src, &mut dst, &buf[..n]).await?;
            } else {
                // Behind earlier held chunks even when latency is now zero, to keep order.
                pending.push_back((Instant::now() + latency, buf[..n].to_vec()));
            }
        }
        dst.shutdown().await
    }

    /// Whether this is a request pump whose connection holds its requests back now.
    fn holding(&self) -> bool {
        self.dir == Direction::Requests && self.state.borrow().holds(self.seq)
    }

    /// Holds one chunk back while the hold lasts, else passes it to [`emit`](Self::emit).
    async fn forward(
        &mut self,
        src: &ReadHalf<'_>,
        dst: &mut (impl AsyncWrite + Unpin),
        chunk: &[u8],
    ) -> io::Result<()> {
        if self.holding() || !self.held.is_empty() {
            self.held.push(chunk);
            return Ok(());
        }
        self.emit(src, dst, chunk).await
    }

    /// Writes one chunk on, unless its direction is dropped; resets the connection after a
    /// request when a reset is armed.
    async fn emit(
        &self,
        src: &ReadHalf<'_>,
        dst: &mut (impl AsyncWrite + Unpin),
        chunk: &[u8],
    ) -> io::Result<()> {
        if !self.state.borrow().forwards(self.generation, self.dir) {
            // Black hole: the bytes are gone.
            return Ok(());
        }
        match self.dir {
            Direction::Replies => {
                if self.tripped.load(Ordering::SeqCst) {
                    return Ok(());
                }
                match dst.write_all(chunk).await {
                    // The client is gone; its requests may still be on their way to the
                    // server (held, or delayed): the replies are read and dropped rather
                    // than ending the connection under them.
                    Err(e) if self.state.borrow().hold_below > self.seq || gone(&e) => {
                        self.tripped.store(true, Ordering::SeqCst);
                        Ok(())
                    }
                    r => r,
                }
            }
            Direction::Requests => {
                if !take_reset(&self.resets) {
                    return dst.write_all(chunk).await;
                }
                // Before the write: the reply must not slip through in between.
                self.tripped.store(true, Ordering::SeqCst);
                dst.write_all(chunk).await?;
                dst.flush().await?;
                // The client's socket: closing it with SO_LINGER 0 sends a RST.
                let _ = src.as_ref().set_zero_linger();
                Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "fault proxy reset the connection after a request",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests;
