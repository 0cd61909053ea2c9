//! Node methods for replication status and recovery, and a test-only role that broadcasts a
//! revoked commitment (an outdated-state client).

use std::sync::{Arc, Mutex};

use bitcoin::{BlockHash, Transaction};
use lightning::chain::channelmonitor::ChannelMonitor;
use lightning::events::bump_transaction::BumpTransactionEvent;
use lightning::events::{Event as LdkEvent, ReplayEvent};
use lightning::ln::types::ChannelId;
use lightning::sign::InMemorySigner;
use lightning::util::ser::{ReadableArgs, Writeable};

use super::persist::ReplicationStatus;
use crate::logger::LdkLogger;
use crate::{Error, Node};

impl Node {
    /// Monitor replication health: reachable replicas, writes queued for them, monitor updates
    /// held back (their channels are paused until replicated). `None` without replicas.
    pub fn monitor_replication_status(&self) -> Option<ReplicationStatus> {
        let inner = self.inner();
        inner.persister.status(&inner.chain_monitor)
    }

    /// Force-closes every channel whose monitor the node has but whose channel it does not
    /// know, as after [`crate::Builder::restore_monitors_from`]: broadcasts our latest
    /// commitment from the monitor; the funds then come back to the wallet as in any force
    /// close (the anchor is fee-bumped from the wallet, the balance is swept after the CSV
    /// delay). Returns the channels closed.
    ///
    /// # Errors
    /// [`Error::NotRunning`]: the broadcast and the sweeps need the running node.
    pub fn force_close_restored_channels(&self) -> Result<Vec<ChannelId>, Error> {
        if !self.is_running() {
            return Err(Error::NotRunning);
        }
        let inner = self.inner();
        let known: Vec<ChannelId> = inner
            .channel_manager
            .list_channels()
            .into_iter()
            .map(|c| c.channel_id)
            .collect();
        let mut closed = Vec::new();
        for id in inner.chain_monitor.list_monitors() {
            if known.contains(&id) {
                continue;
            }
            let Ok(monitor) = inner.chain_monitor.get_monitor(id) else {
                continue;
            };
            if monitor.get_claimable_balances().is_empty() {
                continue;
            }
            log::warn!("force-closing restored channel {id}: broadcasting our latest commitment");
            monitor.broadcast_latest_holder_commitment_txn(
                &inner._broadcaster,
                &inner.fees,
                &Arc::new(LdkLogger),
            );
            closed.push(id);
        }
        Ok(closed)
    }

    /// Test role: the serialized monitor of a channel, to broadcast later with
    /// [`Node::broadcast_revoked_commitment`].
    ///
    /// # Errors
    /// [`Error::UnknownChannel`].
    #[doc(hidden)]
    pub fn snapshot_channel_monitor(&self, user_channel_id: u128) -> Result<Vec<u8>, Error> {
        let inner = self.inner();
        let id = inner
            .channel_manager
            .list_channels()
            .into_iter()
            .find(|c| c.user_channel_id == user_channel_id)
            .map(|c| c.channel_id)
            .ok_or_else(|| Error::UnknownChannel(format!("user_channel_id {user_channel_id}")))?;
        let monitor = inner
            .chain_monitor
            .get_monitor(id)
            .map_err(|_| Error::UnknownChannel(id.to_string()))?;
        Ok(monitor.encode())
    }

    /// Test role, **cheating on purpose**: signs our commitment from a monitor snapshot taken
    /// earlier (now revoked) and broadcasts it, as an outdated or malicious client would. The
    /// counterparty (or its tower) may then take the whole channel. Returns the commitment.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the snapshot does not decode; [`Error::ChannelOperation`] if no
    /// commitment could be signed; [`Error::NotRunning`].
    #[doc(hidden)]
    pub fn broadcast_revoked_commitment(&self, snapshot: &[u8]) -> Result<Transaction, Error> {
        if !self.is_running() {
            return Err(Error::NotRunning);
        }
        let inner = self.inner();
        let keys = &inner.persister.keys;
        let (_, monitor) = <(BlockHash, ChannelMonitor<InMemorySigner>)>::read(
            &mut &snapshot[..],
            (&**keys, &**keys),
        )
        .map_err(|e| Error::Corrupt(format!("monitor snapshot: {e:?}")))?;
        // Ask the snapshot (a detached copy) to close: with anchors it yields the signed
        // commitment in a bump event instead of broadcasting it.
        let sink = Arc::new(Capture::default());
        let logger = Arc::new(LdkLogger);
        monitor.broadcast_latest_holder_commitment_txn(&sink, &inner.fees, &logger);
        let found: Mutex<Option<Transaction>> = Mutex::new(None);
        let handler = |e: LdkEvent| -> Result<(), ReplayEvent> {
            if let LdkEvent::BumpTransaction(BumpTransactionEvent::ChannelClose {
                commitment_tx,
                ..
            }) = e
            {
                *found.lock().unwrap_or_else(|p| p.into_inner()) = Some(commitment_tx);
            }
            Ok(())
        };
        let _ = monitor.process_pending_events(&&handler, &logger);
        let tx = found
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .or_else(|| {
                sink.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .find(|t| t.input.len() == 1)
                    .cloned()
            })
            .ok_or_else(|| Error::ChannelOperation("snapshot yielded no commitment".into()))?;
        log::warn!(
            "TEST ROLE: broadcasting revoked commitment {} of channel {}",
            tx.compute_txid(),
            monitor.channel_id()
        );
        lightning::chain::chaininterface::BroadcasterInterface::broadcast_transactions(
            &*inner._broadcaster,
            &[&tx],
        );
        Ok(tx)
    }
}

/// A broadcaster that keeps what it is given.
#[derive(Default)]
struct Capture(Mutex<Vec<Transaction>>);

impl lightning::chain::chaininterface::BroadcasterInterface for Capture {
    fn broadcast_transactions(&self, txs: &[&Transaction]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(txs.iter().map(|t| (*t).clone()));
    }
}
