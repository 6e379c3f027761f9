//! Wake-ups for waiters: a release publishes on a per-key channel, and a waiting
//! acquisition retries as soon as it hears it instead of sleeping out its retry delay.
//!
//! Correctness never depends on this: a woken waiter still needs a quorum, and a missed
//! message (a subscriber connection down, a release by a client that does not publish)
//! only means the waiter falls back to its retry delay.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::watch;

use crate::node::Node;

/// The channel a release of `key` publishes on is this prefix followed by the key.
pub(crate) const CHANNEL_PREFIX: &str = "tokio-redlock:released:";

/// Bound on making a subscriber connection and on each (un)subscribe. Waiting longer
/// buys nothing: the retry delay is the fallback anyway.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_millis(500);

struct Channel {
    tx: watch::Sender<u64>,
    waiters: usize,
}

/// One subscriber connection per node, shared by every waiter of a manager, made on
/// first need; and the channels waiters listen on.
pub(crate) struct Wakeups {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    sinks: Arc<[tokio::sync::Mutex<Option<PubSubSink>>]>,
    /// The reader tasks, stopped with the manager: a pub/sub connection is not closed
    /// by dropping its sink.
    readers: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        for reader in self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            reader.abort();
        }
    }
}

impl fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let channels = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Wakeups")
            .field("channels", &channels)
            .finish()
    }
}

/// A waiter's registration; dropping it unsubscribes once no waiter is left.
pub(crate) struct Subscription {
    channel: String,
    rx: watch::Receiver<u64>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    sinks: Arc<[tokio::sync::Mutex<Option<PubSubSink>>]>,
}

impl Subscription {
    /// Resolves on the next release message after the last one this waiter saw.
    ///
    /// # Cancel safety
    /// Cancel safe: a message that arrives while nobody waits is seen by the next call.
    pub(crate) async fn released(&mut self) {
        if self.rx.changed().await.is_err() {
            // The sender is gone (cannot happen while we are registered); never resolve.
            futures::future::pending::<()>().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ch) = channels.get_mut(&self.channel) else {
            return;
        };
        ch.waiters = ch.waiters.saturating_sub(1);
        if ch.waiters > 0 {
            return;
        }
        channels.remove(&self.channel);
        drop(channels);
        // The last waiter is gone: unsubscribe in the background, so that the nodes do
        // not keep one channel per resource ever waited on.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (channel, channels, sinks) = (
            std::mem::take(&mut self.channel),
            Arc::clone(&self.channels),
            Arc::clone(&self.sinks),
        );
        handle.spawn(async move {
            for slot in sinks.iter() {
                let Some(mut sink) = slot.lock().await.clone() else {
                    continue;
                };
                // A new waiter may have come meanwhile; it needs the subscription.
                let wanted = channels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains_key(&channel);
                if wanted {
                    return;
                }
                let _ = tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.unsubscribe(&channel)).await;
            }
        });
    }
}

impl Wakeups {
    pub(crate) fn new(nodes: usize) -> Self {
        Self {
            channels: Arc::new(Mutex::new(HashMap::new())),
            sinks: (0..nodes).map(|_| tokio::sync::Mutex::new(None)).collect(),
            readers: Mutex::new(Vec::new()),
        }
    }

    /// Registers a waiter for releases of `key` and makes sure every reachable node
    /// will tell us. Never fails: a node that cannot be subscribed to is skipped.
    pub(crate) async fn subscribe(&self, nodes: &[Node], key: &str) -> Subscription {
        let channel = format!("{CHANNEL_PREFIX}{key}");
        let rx = {
            let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
            let ch = channels.entry(channel.clone()).or_insert_with(|| Channel {
                tx: watch::Sender::new(0),
                waiters: 0,
            });
            ch.waiters += 1;
            ch.tx.subscribe()
        };
        let subscribes = nodes
            .iter()
            .zip(self.sinks.iter())
            .map(|(node, sink)| self.subscribe_on(node, sink, &channel));
        futures::future::join_all(subscribes).await;
        Subscription {
            channel,
            rx,
            channels: Arc::clone(&self.channels),
            sinks: Arc::clone(&self.sinks),
        }
    }

    async fn subscribe_on(
        &self,
        node: &Node,
        slot: &tokio::sync::Mutex<Option<PubSubSink>>,
        channel: &str,
    ) {
        let result = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
            let mut slot = slot.lock().await;
            if slot.is_none() {
                let pubsub = node.client().get_async_pubsub().await?;
                let (sink, mut stream) = pubsub.split();
                let channels = Arc::clone(&self.channels);
                // The reader lives as long as the connection: it ends when the node
                // closes it (the next waiter then finds the sink broken and reconnects).
                let reader = tokio::spawn(async move {
                    while let Some(msg) = stream.next().await {
                        let name = msg.get_channel_name();
                        let channels = channels.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(ch) = channels.get(name) {
                            ch.tx.send_modify(|n| *n = n.wrapping_add(1));
                        }
                    }
                });
                let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
                readers.retain(|r| !r.is_finished());
                readers.push(reader.abort_handle());
                drop(readers);
                *slot = Some(sink);
            }
            let Some(sink) = slot.as_mut() else {
                return Ok(());
            };
            let result = sink.subscribe(channel).await;
            if result.is_err() {
                // A broken connection: make a new one next time.
                *slot = None;
            }
            result
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(node = node.index, error = %e, "no release wake-ups from this node")
            }
            Err(_) => tracing::debug!(node = node.index, "subscribing for wake-ups timed out"),
        }
    }
}
