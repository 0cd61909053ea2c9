//! The node's event stream: what happened to channels, payments and on-chain funds.
//!
//! Events are written to SQLite before LDK's event handler returns, so an event LDK handed us is
//! never lost across a crash; the application acknowledges each one with
//! [`crate::Node::event_handled`], which deletes it.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use bitcoin::secp256k1::PublicKey;
use bitcoin::{OutPoint, Txid};
use lightning::impl_writeable_tlv_based_enum;
use lightning::ln::types::ChannelId;
use lightning::util::ser::{Readable, Writeable};
use lightning_types::payment::{PaymentHash, PaymentPreimage};
use rusqlite::params;

use super::store::SqliteStore;
use crate::Error;

/// Something that happened on the node, for the application to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A channel's funding transaction was broadcast (or seen); it is not usable yet.
    ChannelPending {
        /// The channel's id.
        channel_id: ChannelId,
        /// The id we gave the channel when opening it (0 for inbound channels).
        user_channel_id: u128,
        /// The peer on the other side.
        counterparty_node_id: PublicKey,
        /// The funding output.
        funding_txo: OutPoint,
    },
    /// A channel is confirmed and usable for payments.
    ChannelReady {
        /// The channel's id.
        channel_id: ChannelId,
        /// The id we gave the channel when opening it.
        user_channel_id: u128,
        /// The peer on the other side.
        counterparty_node_id: PublicKey,
    },
    /// A channel was closed (or failed to open).
    ChannelClosed {
        /// The channel's id.
        channel_id: ChannelId,
        /// The id we gave the channel when opening it.
        user_channel_id: u128,
        /// The peer on the other side, when known.
        counterparty_node_id: Option<PublicKey>,
        /// Why, in words (LDK's closure reason).
        reason: String,
    },
    /// A payment to a hold invoice arrived and is held: claim it with
    /// [`crate::Node::claim_payment`] or fail it with [`crate::Node::fail_payment`] before
    /// `claim_deadline`.
    PaymentClaimable {
        /// The payment hash.
        payment_hash: PaymentHash,
        /// What the payer sent, in msat.
        amount_msat: u64,
        /// Block height by which the HTLC must be claimed, if any.
        claim_deadline: Option<u32>,
    },
    /// A held payment (see [`Event::PaymentClaimable`]) was neither claimed nor failed before
    /// its claim deadline, so the node failed it back to protect the channel. The hold
    /// invoice is closed: its payment record is failed and a retry is refused.
    HeldPaymentTimedOut {
        /// The payment hash.
        payment_hash: PaymentHash,
        /// What the payer had sent, in msat, when known.
        amount_msat: Option<u64>,
    },
    /// A payment to us was received and claimed.
    PaymentReceived {
        /// The payment hash.
        payment_hash: PaymentHash,
        /// What we received, in msat.
        amount_msat: u64,
    },
    /// A payment we sent arrived.
    PaymentSuccessful {
        /// The payment hash.
        payment_hash: PaymentHash,
        /// The preimage, proof of payment.
        payment_preimage: PaymentPreimage,
        /// Routing fees paid, in msat.
        fee_paid_msat: Option<u64>,
        /// What the recipient got, in msat (fees excluded), when LDK reports it.
        amount_msat: Option<u64>,
    },
    /// A payment we sent failed for good.
    PaymentFailed {
        /// The payment hash, when known.
        payment_hash: Option<PaymentHash>,
        /// Why, in words.
        reason: String,
    },
    /// We forwarded a payment and earned a fee.
    PaymentForwarded {
        /// Fee earned, in msat.
        fee_earned_msat: Option<u64>,
        /// Amount forwarded out, in msat.
        outbound_amount_msat: Option<u64>,
    },
    /// On-chain funds arrived in the wallet and confirmed.
    OnchainFundsReceived {
        /// The transaction.
        txid: Txid,
        /// Net amount received by the wallet, in sat.
        amount_sat: u64,
    },
}

#[allow(dependency_on_unit_never_type_fallback, clippy::drop_non_drop)]
mod ser {
    use super::*;
    impl_writeable_tlv_based_enum!(Event,
        (0, ChannelPending) => {
            (0, channel_id, required),
            (2, user_channel_id, required),
            (4, counterparty_node_id, required),
            (6, funding_txo, required),
        },
        (1, ChannelReady) => {
            (0, channel_id, required),
            (2, user_channel_id, required),
            (4, counterparty_node_id, required),
        },
        (2, ChannelClosed) => {
            (0, channel_id, required),
            (2, user_channel_id, required),
            (4, counterparty_node_id, option),
            (6, reason, required),
        },
        (3, PaymentClaimable) => {
            (0, payment_hash, required),
            (2, amount_msat, required),
            (4, claim_deadline, option),
        },
        (4, PaymentReceived) => {
            (0, payment_hash, required),
            (2, amount_msat, required),
        },
        (5, PaymentSuccessful) => {
            (0, payment_hash, required),
            (2, payment_preimage, required),
            (4, fee_paid_msat, option),
            (6, amount_msat, option),
        },
        (6, PaymentFailed) => {
            (0, payment_hash, option),
            (2, reason, required),
        },
        (7, PaymentForwarded) => {
            (0, fee_earned_msat, option),
            (2, outbound_amount_msat, option),
        },
        (8, OnchainFundsReceived) => {
            (0, txid, required),
            (2, amount_sat, required),
        },
        (9, HeldPaymentTimedOut) => {
            (0, payment_hash, required),
            (2, amount_msat, option),
        },
    );
}

/// A durable FIFO of [`Event`]s with blocking and async waiting.
pub(crate) struct EventQueue {
    store: Arc<SqliteStore>,
    queue: Mutex<VecDeque<(i64, Event)>>,
    condvar: Condvar,
    notify: tokio::sync::Notify,
}

impl EventQueue {
    /// Loads the events not yet acknowledged.
    pub(crate) fn load(store: Arc<SqliteStore>) -> Result<Self, Error> {
        let mut queue = VecDeque::new();
        {
            let conn = store.conn();
            let mut stmt = conn.prepare("SELECT seq, event FROM node_events ORDER BY seq")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            for row in rows {
                let (seq, bytes) = row?;
                let event = Event::read(&mut &bytes[..])
                    .map_err(|e| Error::Corrupt(format!("event {seq}: {e:?}")))?;
                queue.push_back((seq, event));
            }
        }
        Ok(Self {
            store,
            queue: Mutex::new(queue),
            condvar: Condvar::new(),
            notify: Default::default(),
        })
    }

    /// Appends an event durably (its own fsync), then wakes waiters. For events nothing else
    /// would reproduce after a power cut (on-chain receipts found while connecting blocks).
    pub(crate) fn push(&self, event: Event) -> Result<(), Error> {
        self.push_inner(event, true, |_| Ok(()))
    }

    /// Appends an event that LDK handed us, committed without its own fsync: see
    /// [`EventQueue::push_with`].
    pub(crate) fn push_from_ldk(&self, event: Event) -> Result<(), Error> {
        self.push_inner(event, false, |_| Ok(()))
    }

    /// Runs `f` and appends `event` (an event LDK handed us) in one transaction, then wakes
    /// waiters.
    ///
    /// The commit is not fsynced on its own. That is safe for LDK's events: the WAL keeps
    /// commits in order, so after a power cut either this commit survived or every later one
    /// on this database did not — including the channel manager write that records the event
    /// as handled — and LDK hands the event out again on the next start. The next monitor
    /// update (an fsync) makes it durable in any case. `f` must use the connection it is
    /// given, not lock the store again.
    pub(crate) fn push_with(
        &self,
        event: Event,
        f: impl FnOnce(&rusqlite::Connection) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.push_inner(event, false, f)
    }

    fn push_inner(
        &self,
        event: Event,
        durable: bool,
        f: impl FnOnce(&rusqlite::Connection) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = event.encode();
        let write = |conn: &rusqlite::Connection| -> Result<i64, Error> {
            // IMMEDIATE: take the write lock up front; a read-then-write upgrade fails at once
            // (SQLITE_BUSY) when another connection committed in between.
            let tx = rusqlite::Transaction::new_unchecked(
                conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            f(&tx)?;
            tx.prepare_cached("INSERT INTO node_events (event) VALUES (?1)")?
                .execute(params![bytes])?;
            let seq = tx.last_insert_rowid();
            tx.commit()?;
            Ok(seq)
        };
        let seq = if durable {
            write(&self.store.conn())?
        } else {
            self.store.relaxed(write)?
        };
        log::debug!("event {seq}: {event:?}");
        queue.push_back((seq, event));
        drop(queue);
        self.condvar.notify_all();
        self.notify.notify_waiters();
        Ok(())
    }

    pub(crate) fn next_event(&self) -> Option<Event> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .map(|(_, e)| e.clone())
    }

    pub(crate) fn wait_next_event(&self, timeout: Option<std::time::Duration>) -> Option<Event> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some((_, e)) = queue.front() {
                return Some(e.clone());
            }
            queue = match deadline {
                None => self.condvar.wait(queue).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return None;
                    }
                    self.condvar
                        .wait_timeout(queue, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    pub(crate) async fn next_event_async(&self) -> Event {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = self.next_event() {
                return e;
            }
            notified.await;
        }
    }

    /// Removes the event at the head of the queue.
    pub(crate) fn event_handled(&self) -> Result<(), Error> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seq, _)) = queue.front() {
            // An acknowledgement lost to a power cut only means the event is handed out again.
            self.store
                .relaxed(|c| c.execute("DELETE FROM node_events WHERE seq=?1", params![seq]))?;
            queue.pop_front();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let e1 = Event::PaymentReceived {
            payment_hash: PaymentHash([1; 32]),
            amount_msat: 5,
        };
        let e2 = Event::PaymentFailed {
            payment_hash: None,
            reason: "no route".into(),
        };
        {
            let q = EventQueue::load(SqliteStore::open(&path).unwrap()).unwrap();
            q.push(e1.clone()).unwrap();
            q.push(e2.clone()).unwrap();
            assert_eq!(q.next_event(), Some(e1.clone()));
        }
        let q = EventQueue::load(SqliteStore::open(&path).unwrap()).unwrap();
        assert_eq!(q.next_event(), Some(e1));
        q.event_handled().unwrap();
        assert_eq!(q.wait_next_event(None), Some(e2));
        q.event_handled().unwrap();
        assert_eq!(
            q.wait_next_event(Some(std::time::Duration::from_millis(10))),
            None
        );
        let q = EventQueue::load(SqliteStore::open(&path).unwrap()).unwrap();
        assert_eq!(q.next_event(), None);
    }
}
