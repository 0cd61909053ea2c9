//! The node's background tasks: event processing and persistence, chain sync, fee updates,
//! peer reconnection and the inbound listener.

use std::sync::Arc;
use std::time::Duration;

use lightning::util::persist::{
    KVStoreSync, CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE, NETWORK_GRAPH_PERSISTENCE_KEY,
    NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE, NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE,
    SCORER_PERSISTENCE_KEY, SCORER_PERSISTENCE_PRIMARY_NAMESPACE,
    SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
};
use lightning::util::ser::Writeable;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Inner;

const CM_TIMER: Duration = Duration::from_secs(60);
const PEER_TIMER: Duration = Duration::from_secs(10);
const REBROADCAST_TIMER: Duration = Duration::from_secs(30);
const SWEEPER_TIMER: Duration = Duration::from_secs(30);
const GRAPH_PERSIST_TIMER: Duration = Duration::from_secs(600);

/// A random delay, mean ~50 ms, before processing HTLCs that may be forwards, so their
/// timing says less about where they came from (the same idea as LDK's `fwd_batch`).
fn forward_batch_delay() -> Duration {
    Duration::from_micros(rand::random::<u64>() % 100_000)
}

fn persist_manager(inner: &Inner, durable: bool) {
    let bytes = inner.channel_manager.encode();
    let write = |p: &str, s: &str, k: &str, v: Vec<u8>| {
        if durable {
            KVStoreSync::write(&*inner.store, p, s, k, v)
        } else {
            inner.store.write_relaxed(p, s, k, v)
        }
    };
    if let Err(e) = write(
        CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
        CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
        CHANNEL_MANAGER_PERSISTENCE_KEY,
        bytes,
    ) {
        // Losing the manager is recoverable (monitors are durable), but it means force closes.
        log::error!("failed to persist the channel manager: {e}");
    }
}

fn persist_graph_and_scorer(inner: &Inner) {
    let graph = inner.graph.encode();
    let scorer = inner
        .scorer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .encode();
    for (p, s, k, v) in [
        (
            NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
            NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE,
            NETWORK_GRAPH_PERSISTENCE_KEY,
            graph,
        ),
        (
            SCORER_PERSISTENCE_PRIMARY_NAMESPACE,
            SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
            SCORER_PERSISTENCE_KEY,
            scorer,
        ),
    ] {
        if let Err(e) = inner.store.write_relaxed(p, s, k, v) {
            log::warn!("failed to persist {k}: {e}");
        }
    }
}

/// Processes LDK events, HTLCs and persistence until `stop` fires; persists the manager last.
pub(crate) async fn process_events(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let handler = &inner.handler;
    inner.channel_manager.timer_tick_occurred();
    inner.chain_monitor.rebroadcast_pending_claims();
    let mut next_cm_tick = Instant::now() + CM_TIMER;
    let mut next_peer_tick = Instant::now() + PEER_TIMER;
    let mut next_rebroadcast = Instant::now() + REBROADCAST_TIMER;
    let mut next_sweep = Instant::now() + SWEEPER_TIMER;
    let mut next_graph = Instant::now() + GRAPH_PERSIST_TIMER;
    let mut forward_at: Option<Instant> = None;

    loop {
        inner
            .channel_manager
            .process_pending_events_async(|e| handler.handle(e))
            .await;
        inner
            .chain_monitor
            .process_pending_events_async(|e| handler.handle(e))
            .await;
        inner.peer_manager.process_events();

        if inner.channel_manager.needs_pending_htlc_processing() {
            if !inner.triage.forwards_pending() {
                inner.channel_manager.process_pending_htlc_forwards();
                forward_at = None;
            } else {
                let at = *forward_at.get_or_insert_with(|| Instant::now() + forward_batch_delay());
                if Instant::now() >= at {
                    inner.channel_manager.process_pending_htlc_forwards();
                    forward_at = None;
                }
            }
        } else {
            forward_at = None;
        }

        if inner.channel_manager.get_and_clear_needs_persistence() {
            persist_manager(&inner, false);
        }

        let now = Instant::now();
        if now >= next_cm_tick {
            inner.channel_manager.timer_tick_occurred();
            next_cm_tick = now + CM_TIMER;
        }
        if now >= next_peer_tick {
            inner.peer_manager.timer_tick_occurred();
            next_peer_tick = now + PEER_TIMER;
        }
        if now >= next_rebroadcast {
            inner.chain_monitor.rebroadcast_pending_claims();
            next_rebroadcast = now + REBROADCAST_TIMER;
        }
        if now >= next_sweep {
            let _ = inner
                .sweeper
                .regenerate_and_broadcast_spend_if_necessary()
                .await;
            next_sweep = now + SWEEPER_TIMER;
        }
        if now >= next_graph {
            persist_graph_and_scorer(&inner);
            next_graph = now + GRAPH_PERSIST_TIMER;
        }

        if inner.channel_manager.get_and_clear_needs_persistence() {
            persist_manager(&inner, false);
        }

        let mut wake = next_cm_tick
            .min(next_peer_tick)
            .min(next_rebroadcast)
            .min(next_sweep)
            .min(next_graph);
        if let Some(at) = forward_at {
            wake = wake.min(at);
        }
        tokio::select! {
            _ = inner.channel_manager.get_event_or_persistence_needed_future() => {},
            _ = inner.chain_monitor.get_update_future() => {},
            _ = tokio::time::sleep_until(wake) => {},
            _ = stop.changed() => break,
        }
    }
    // Hand out what is pending, then write the final state.
    inner
        .channel_manager
        .process_pending_events_async(|e| handler.handle(e))
        .await;
    inner
        .chain_monitor
        .process_pending_events_async(|e| handler.handle(e))
        .await;
    persist_manager(&inner, true);
    persist_graph_and_scorer(&inner);
}

/// Syncs the chain and wallet on a timer; fees on a slower one.
pub(crate) async fn sync_chain(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut next_fees = Instant::now();
    loop {
        if Instant::now() >= next_fees {
            if let Err(e) = inner.chain.update_fees().await {
                log::warn!("fee update failed: {e}");
            }
            next_fees = Instant::now() + inner.config.fee_update_interval;
        }
        if let Err(e) = inner.sync().await {
            log::warn!("chain sync failed: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(inner.config.sync_interval) => {},
            _ = stop.changed() => break,
        }
    }
}

/// Reconnects to persisted peers whose connection dropped.
pub(crate) async fn reconnect_peers(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let connected: Vec<_> = inner
            .peer_manager
            .list_peers()
            .into_iter()
            .map(|p| p.counterparty_node_id)
            .collect();
        for (node_id, addr) in inner.stored_peers() {
            if !connected.contains(&node_id) {
                if let Err(e) = inner.connect(node_id, addr).await {
                    log::debug!("reconnect to {node_id}@{addr} failed: {e}");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {},
            _ = stop.changed() => break,
        }
    }
}

/// Accepts inbound Lightning connections.
pub(crate) async fn listen(
    inner: Arc<Inner>,
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    let pm = Arc::clone(&inner.peer_manager);
                    // See `Inner::connect`: small messages must not wait for Nagle.
                    if let Err(e) = stream.set_nodelay(true) {
                        log::warn!("TCP_NODELAY: {e}");
                    }
                    match stream.into_std() {
                        Ok(std_stream) => {
                            tokio::spawn(lightning_net_tokio::setup_inbound(pm, std_stream));
                        },
                        Err(e) => log::warn!("inbound connection: {e}"),
                    }
                },
                Err(e) => log::warn!("accept failed: {e}"),
            },
            _ = stop.changed() => break,
        }
    }
}
