//! Typed domain events and their durable, ordered log.
//!
//! Every state change of the merchant domain appends one [`DomainEvent`] to the `domain_events`
//! table *in the same SQLite transaction* as the change itself ([`EventLog::append_in`]), so an
//! event exists exactly when its change does. Each event gets a strictly increasing sequence
//! number; consumers (webhooks, SSE, the API) keep a cursor and [`EventLog::read_after`] it
//! after a restart, or [`EventLog::subscribe`] for the live stream.

use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, Transaction};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Error;

/// A database connection shared by the domain components (one per node database).
pub type SharedConn = Arc<Mutex<Connection>>;

/// Locks a [`SharedConn`], surviving a poisoned mutex.
pub fn lock(conn: &SharedConn) -> std::sync::MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

/// The invoice fields every invoice event carries (seed 002's webhook payload and more).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceEventData {
    /// Invoice id, e.g. `INV-001-LN`.
    pub invoice_id: String,
    /// Payment hash, hex.
    pub payment_hash: String,
    /// Amount in sat: requested, or received once paid; `None` for an unpaid open invoice.
    pub amount_sats: Option<u64>,
    /// Amount in msat, as precise as the payment.
    pub amount_msat: Option<u64>,
    /// Fiat amount, when priced in fiat (or converted at the stored rate).
    #[serde(with = "rust_decimal::serde::str_option")]
    pub amount_fiat: Option<Decimal>,
    /// ISO 4217 currency of `amount_fiat`.
    pub currency: Option<String>,
    /// When the event happened, RFC 3339 UTC.
    pub timestamp: String,
    /// Invoice description.
    pub description: String,
    /// The merchant's metadata (a JSON object).
    pub metadata: serde_json::Value,
}

/// Something that happened in the merchant domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DomainEvent {
    /// An invoice was created.
    InvoiceCreated(InvoiceEventData),
    /// A hold invoice's payment arrived and is held until settled or cancelled.
    InvoiceAccepted(InvoiceEventData),
    /// An invoice was paid and settled.
    PaymentReceived(InvoiceEventData),
    /// An invoice was cancelled: by the merchant, or by the node when a held payment reached
    /// its claim deadline unsettled (the payer's payment then fails).
    InvoiceCancelled(InvoiceEventData),
    /// An invoice expired unpaid.
    InvoiceExpired(InvoiceEventData),
    /// An outgoing payment succeeded.
    PaymentSent {
        /// Payment hash, hex.
        payment_hash: String,
        /// Amount sent, msat, when known.
        amount_msat: Option<u64>,
        /// Routing fee, msat.
        fee_msat: u64,
        /// RFC 3339 UTC.
        timestamp: String,
    },
    /// An outgoing payment failed.
    PaymentFailed {
        /// Payment hash, hex, when known.
        payment_hash: Option<String>,
        /// Why.
        reason: String,
        /// RFC 3339 UTC.
        timestamp: String,
    },
    /// A channel became usable.
    ChannelOpened {
        /// Channel id, hex.
        channel_id: String,
        /// Peer node id, hex.
        counterparty: String,
        /// RFC 3339 UTC.
        timestamp: String,
    },
    /// A channel closed.
    ChannelClosed {
        /// Channel id, hex.
        channel_id: String,
        /// Peer node id, hex, when known.
        counterparty: Option<String>,
        /// Why.
        reason: String,
        /// RFC 3339 UTC.
        timestamp: String,
    },
}

impl DomainEvent {
    /// The snake_case event name (`payment_received`, ...), as in the JSON `event` field.
    pub fn event_type(&self) -> &'static str {
        match self {
            DomainEvent::InvoiceCreated(_) => "invoice_created",
            DomainEvent::InvoiceAccepted(_) => "invoice_accepted",
            DomainEvent::PaymentReceived(_) => "payment_received",
            DomainEvent::InvoiceCancelled(_) => "invoice_cancelled",
            DomainEvent::InvoiceExpired(_) => "invoice_expired",
            DomainEvent::PaymentSent { .. } => "payment_sent",
            DomainEvent::PaymentFailed { .. } => "payment_failed",
            DomainEvent::ChannelOpened { .. } => "channel_opened",
            DomainEvent::ChannelClosed { .. } => "channel_closed",
        }
    }
}

/// Now as RFC 3339 UTC with second precision (`2025-01-15T10:30:00Z`).
pub fn rfc3339_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An event as stored: its sequence number, type, JSON payload and time.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Strictly increasing position in the log (starts at 1).
    pub seq: u64,
    /// The event name, e.g. `payment_received`.
    pub event_type: String,
    /// The serialized [`DomainEvent`] (includes the `event` field).
    pub payload: serde_json::Value,
    /// When it was appended, Unix milliseconds.
    pub created_at_ms: u64,
}

impl StoredEvent {
    /// Decodes the payload back into a [`DomainEvent`].
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the payload is not a known event.
    pub fn decode(&self) -> Result<DomainEvent, Error> {
        serde_json::from_value(self.payload.clone())
            .map_err(|e| Error::Corrupt(format!("event {}: {e}", self.seq)))
    }
}

const MIGRATIONS: &[&str] = &["CREATE TABLE domain_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );"];

/// The durable, ordered log of [`DomainEvent`]s with a live stream.
pub struct EventLog {
    conn: SharedConn,
    live: tokio::sync::broadcast::Sender<StoredEvent>,
}

impl EventLog {
    /// Opens the log on the domain connection, creating its table if needed.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn open(conn: SharedConn) -> Result<Self, Error> {
        crate::db::migrate(&lock(&conn), "events", MIGRATIONS)?;
        let (live, _) = tokio::sync::broadcast::channel(1024);
        Ok(Self { conn, live })
    }

    /// The shared connection (for components that append in their own transactions).
    pub fn conn(&self) -> &SharedConn {
        &self.conn
    }

    /// Appends `event` inside the caller's transaction. After the transaction commits, pass the
    /// result to [`EventLog::publish`] so live subscribers see it.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn append_in(
        &self,
        tx: &Transaction<'_>,
        event: &DomainEvent,
    ) -> Result<StoredEvent, Error> {
        let payload =
            serde_json::to_value(event).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let now = crate::node::payments::now_ms();
        tx.execute(
            "INSERT INTO domain_events (event_type, payload, created_at) VALUES (?1, ?2, ?3)",
            params![event.event_type(), payload.to_string(), now as i64],
        )?;
        Ok(StoredEvent {
            seq: tx.last_insert_rowid() as u64,
            event_type: event.event_type().to_string(),
            payload,
            created_at_ms: now,
        })
    }

    /// Sends committed events to live subscribers (a slow subscriber misses events and must
    /// catch up with [`EventLog::read_after`]).
    pub fn publish(&self, events: impl IntoIterator<Item = StoredEvent>) {
        for e in events {
            let _ = self.live.send(e);
        }
    }

    /// Appends one event in its own transaction and publishes it.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn append(&self, event: &DomainEvent) -> Result<StoredEvent, Error> {
        let stored = {
            let mut conn = lock(&self.conn);
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let stored = self.append_in(&tx, event)?;
            tx.commit()?;
            stored
        };
        self.publish([stored.clone()]);
        Ok(stored)
    }

    /// Up to `limit` events with `seq > after_seq`, in order.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn read_after(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredEvent>, Error> {
        let conn = lock(&self.conn);
        let mut stmt = conn.prepare_cached(
            "SELECT seq, event_type, payload, created_at FROM domain_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![after_seq as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(seq, event_type, payload, created)| {
                Ok(StoredEvent {
                    seq: seq as u64,
                    event_type,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| Error::Corrupt(format!("event {seq}: {e}")))?,
                    created_at_ms: created as u64,
                })
            })
            .collect()
    }

    /// The newest sequence number (0 when empty).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn last_seq(&self) -> Result<u64, Error> {
        let conn = lock(&self.conn);
        let seq: Option<i64> =
            conn.query_row("SELECT max(seq) FROM domain_events", [], |r| r.get(0))?;
        Ok(seq.unwrap_or(0) as u64)
    }

    /// A live stream of events appended from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StoredEvent> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(id: &str) -> InvoiceEventData {
        InvoiceEventData {
            invoice_id: id.into(),
            payment_hash: "00".repeat(32),
            amount_sats: Some(11_111),
            amount_msat: Some(11_111_000),
            amount_fiat: Some(Decimal::new(50000, 2)),
            currency: Some("EUR".into()),
            timestamp: rfc3339_now(),
            description: "Invoice INV-001".into(),
            metadata: serde_json::json!({"client": "Acme Corp"}),
        }
    }

    /// One of each variant: its serde tag, `event_type()` and the webhook filter list agree,
    /// in declaration order. A new variant must be added here, which points at the list.
    #[test]
    fn event_names_agree_with_the_webhook_filter_list() {
        let ts = rfc3339_now();
        let all = [
            DomainEvent::InvoiceCreated(data("a")),
            DomainEvent::InvoiceAccepted(data("a")),
            DomainEvent::PaymentReceived(data("a")),
            DomainEvent::InvoiceCancelled(data("a")),
            DomainEvent::InvoiceExpired(data("a")),
            DomainEvent::PaymentSent {
                payment_hash: "00".repeat(32),
                amount_msat: Some(1),
                fee_msat: 0,
                timestamp: ts.clone(),
            },
            DomainEvent::PaymentFailed {
                payment_hash: None,
                reason: "r".into(),
                timestamp: ts.clone(),
            },
            DomainEvent::ChannelOpened {
                channel_id: "c".into(),
                counterparty: "n".into(),
                timestamp: ts.clone(),
            },
            DomainEvent::ChannelClosed {
                channel_id: "c".into(),
                counterparty: None,
                reason: "r".into(),
                timestamp: ts,
            },
        ];
        let names: Vec<&str> = all.iter().map(|e| e.event_type()).collect();
        assert_eq!(names, crate::webhook::EVENT_TYPES);
        for e in &all {
            let json = serde_json::to_value(e).unwrap();
            assert_eq!(json["event"], e.event_type());
        }
    }

    #[test]
    fn append_replay_and_payload_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = Arc::new(Mutex::new(crate::db::open_connection(&path).unwrap()));
        let log = EventLog::open(conn).unwrap();
        let mut live = log.subscribe();
        let e1 = log
            .append(&DomainEvent::InvoiceCreated(data("INV-001-LN")))
            .unwrap();
        let e2 = log
            .append(&DomainEvent::PaymentReceived(data("INV-001-LN")))
            .unwrap();
        assert_eq!((e1.seq, e2.seq), (1, 2));
        assert_eq!(live.try_recv().unwrap(), e1);
        assert_eq!(e2.payload["event"], "payment_received");
        assert_eq!(e2.payload["amount_fiat"], "500.00");
        assert_eq!(e2.payload["metadata"]["client"], "Acme Corp");
        assert!(e2.payload["timestamp"].as_str().unwrap().ends_with('Z'));
        drop(log);
        let log = EventLog::open(Arc::new(Mutex::new(
            crate::db::open_connection(&path).unwrap(),
        )))
        .unwrap();
        let replay = log.read_after(1, 10).unwrap();
        assert_eq!(replay, vec![e2.clone()]);
        assert_eq!(
            replay[0].decode().unwrap(),
            DomainEvent::PaymentReceived(data("INV-001-LN")).clone_with_ts(&replay[0])
        );
        assert_eq!(log.last_seq().unwrap(), 2);
    }

    impl DomainEvent {
        fn clone_with_ts(self, stored: &StoredEvent) -> DomainEvent {
            match self {
                DomainEvent::PaymentReceived(mut d) => {
                    d.timestamp = stored.payload["timestamp"].as_str().unwrap().to_string();
                    DomainEvent::PaymentReceived(d)
                }
                other => other,
            }
        }
    }
}
