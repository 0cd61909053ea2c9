//! The payment store: every inbound and outbound payment, in the node's SQLite database.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::hashes::hex::FromHex;
use bitcoin::hex::DisplayHex;
use lightning_types::payment::{PaymentHash, PaymentPreimage};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::store::SqliteStore;
use crate::Error;

/// Whether we received or sent a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentDirection {
    /// We are the recipient.
    Inbound,
    /// We are the payer.
    Outbound,
}

/// How the payment was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentKind {
    /// A BOLT11 invoice whose preimage the node knows.
    Bolt11,
    /// A BOLT11 invoice for a caller-chosen payment hash: the node holds the HTLC until the
    /// caller claims it with the preimage or fails it ("hold invoice").
    Bolt11Hold,
    /// A spontaneous payment (keysend) carrying its own preimage.
    Keysend,
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Created or in flight.
    Pending,
    /// Claimed (inbound) or confirmed by the preimage (outbound).
    Succeeded,
    /// Failed, expired or abandoned.
    Failed,
}

/// One payment as the node records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentDetails {
    /// The payment hash; with `direction` it identifies the payment.
    pub payment_hash: PaymentHash,
    /// Inbound or outbound.
    pub direction: PaymentDirection,
    /// BOLT11, hold invoice or keysend.
    pub kind: PaymentKind,
    /// Pending, succeeded or failed.
    pub status: PaymentStatus,
    /// The amount in msat: requested (invoice) or, once settled, actually received/sent.
    /// `None` for an open-amount invoice not yet paid.
    pub amount_msat: Option<u64>,
    /// Routing fees paid, for outbound payments that succeeded.
    pub fee_msat: Option<u64>,
    /// The preimage, when known.
    pub preimage: Option<PaymentPreimage>,
    /// The BOLT11 invoice string, when there is one.
    pub invoice: Option<String>,
    /// Why the payment failed, when it did.
    pub failure_reason: Option<String>,
    /// When the record was created, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// When the record last changed, in milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn dir_str(d: PaymentDirection) -> &'static str {
    match d {
        PaymentDirection::Inbound => "inbound",
        PaymentDirection::Outbound => "outbound",
    }
}
fn kind_str(k: PaymentKind) -> &'static str {
    match k {
        PaymentKind::Bolt11 => "bolt11",
        PaymentKind::Bolt11Hold => "bolt11_hold",
        PaymentKind::Keysend => "keysend",
    }
}
fn status_str(s: PaymentStatus) -> &'static str {
    match s {
        PaymentStatus::Pending => "pending",
        PaymentStatus::Succeeded => "succeeded",
        PaymentStatus::Failed => "failed",
    }
}

fn bad(col: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        rusqlite::types::Type::Text,
        format!("bad {what}").into(),
    )
}

fn hex32(col: usize, s: &str) -> rusqlite::Result<[u8; 32]> {
    <[u8; 32]>::from_hex(s).map_err(|_| bad(col, "hex"))
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<PaymentDetails> {
    let hash: String = r.get(0)?;
    let direction = match r.get::<_, String>(1)?.as_str() {
        "inbound" => PaymentDirection::Inbound,
        "outbound" => PaymentDirection::Outbound,
        _ => return Err(bad(1, "direction")),
    };
    let kind = match r.get::<_, String>(2)?.as_str() {
        "bolt11" => PaymentKind::Bolt11,
        "bolt11_hold" => PaymentKind::Bolt11Hold,
        "keysend" => PaymentKind::Keysend,
        _ => return Err(bad(2, "kind")),
    };
    let status = match r.get::<_, String>(3)?.as_str() {
        "pending" => PaymentStatus::Pending,
        "succeeded" => PaymentStatus::Succeeded,
        "failed" => PaymentStatus::Failed,
        _ => return Err(bad(3, "status")),
    };
    let preimage = match r.get::<_, Option<String>>(6)? {
        Some(p) => Some(PaymentPreimage(hex32(6, &p)?)),
        None => None,
    };
    Ok(PaymentDetails {
        payment_hash: PaymentHash(hex32(0, &hash)?),
        direction,
        kind,
        status,
        amount_msat: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        fee_msat: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        preimage,
        invoice: r.get(7)?,
        failure_reason: r.get(8)?,
        created_at_ms: r.get::<_, i64>(9)? as u64,
        updated_at_ms: r.get::<_, i64>(10)? as u64,
    })
}

const COLUMNS: &str = "payment_hash, direction, kind, status, amount_msat, fee_msat, preimage, invoice, failure_reason, created_at, updated_at";

fn write_row(conn: &Connection, p: &PaymentDetails, verb: &str) -> Result<usize, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "{verb} INTO payments ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
    ))?;
    Ok(stmt.execute(params![
        p.payment_hash.0.to_lower_hex_string(),
        dir_str(p.direction),
        kind_str(p.kind),
        status_str(p.status),
        p.amount_msat.map(|v| v as i64),
        p.fee_msat.map(|v| v as i64),
        p.preimage.map(|v| v.0.to_lower_hex_string()),
        p.invoice,
        p.failure_reason,
        p.created_at_ms as i64,
        p.updated_at_ms as i64,
    ])?)
}

/// [`PaymentStore::upsert`] on a given connection or transaction.
pub(crate) fn upsert_in(conn: &Connection, p: &PaymentDetails) -> Result<(), Error> {
    write_row(conn, p, "INSERT OR REPLACE").map(|_| ())
}

/// [`PaymentStore::get`] on a given connection or transaction.
pub(crate) fn get_in(
    conn: &Connection,
    hash: &PaymentHash,
    direction: PaymentDirection,
) -> Result<Option<PaymentDetails>, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM payments WHERE payment_hash=?1 AND direction=?2"
    ))?;
    Ok(stmt
        .query_row(
            params![hash.0.to_lower_hex_string(), dir_str(direction)],
            from_row,
        )
        .optional()?)
}

/// [`PaymentStore::update`] on a given connection or transaction.
pub(crate) fn update_in(
    conn: &Connection,
    hash: &PaymentHash,
    direction: PaymentDirection,
    f: impl FnOnce(&mut PaymentDetails),
) -> Result<Option<PaymentDetails>, Error> {
    let Some(mut p) = get_in(conn, hash, direction)? else {
        return Ok(None);
    };
    f(&mut p);
    p.updated_at_ms = now_ms();
    upsert_in(conn, &p)?;
    Ok(Some(p))
}

/// Reads and writes [`PaymentDetails`] in the node's database.
pub(crate) struct PaymentStore {
    store: Arc<SqliteStore>,
}

impl PaymentStore {
    pub(crate) fn new(store: Arc<SqliteStore>) -> Self {
        Self { store }
    }

    /// Inserts a new payment; fails if one with the same hash and direction exists.
    ///
    /// New records are committed without their own fsync (see [`SqliteStore::relaxed`]): the
    /// next monitor update — which any payment needs — flushes them. After a power cut a record
    /// may be missing; LDK still enforces the invoice's amount and expiry, a hold invoice
    /// without its record is failed back (no preimage is known), and outcomes LDK reports for
    /// a payment without a record are recorded then.
    pub(crate) fn insert(&self, p: &PaymentDetails) -> Result<(), Error> {
        if self
            .store
            .relaxed(|c| write_row(c, p, "INSERT OR IGNORE"))?
            == 0
        {
            return Err(Error::DuplicatePayment(
                p.payment_hash.0.to_lower_hex_string(),
            ));
        }
        Ok(())
    }

    /// Replaces a payment record (insert or update), without its own fsync like
    /// [`PaymentStore::insert`].
    pub(crate) fn upsert(&self, p: &PaymentDetails) -> Result<(), Error> {
        self.store.relaxed(|c| upsert_in(c, p))
    }

    /// Reads one payment.
    pub(crate) fn get(
        &self,
        hash: &PaymentHash,
        direction: PaymentDirection,
    ) -> Result<Option<PaymentDetails>, Error> {
        get_in(&self.store.conn(), hash, direction)
    }

    /// Applies `f` to a stored payment and writes it back; returns the new record, or `None`
    /// if there is no such payment.
    pub(crate) fn update(
        &self,
        hash: &PaymentHash,
        direction: PaymentDirection,
        f: impl FnOnce(&mut PaymentDetails),
    ) -> Result<Option<PaymentDetails>, Error> {
        let conn = self.store.conn();
        // IMMEDIATE: a deferred transaction that reads, then writes, fails at once with
        // "database is locked" when another connection (the merchant domain's) committed in
        // between; taking the write lock first waits on the busy timeout instead.
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)?;
        let out = update_in(&tx, hash, direction, f)?;
        tx.commit()?;
        Ok(out)
    }

    /// Every payment, newest first.
    pub(crate) fn list(&self) -> Result<Vec<PaymentDetails>, Error> {
        let conn = self.store.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM payments ORDER BY created_at DESC, payment_hash"
        ))?;
        let rows = stmt
            .query_map([], from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_update_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
        let ps = PaymentStore::new(store);
        let p = PaymentDetails {
            payment_hash: PaymentHash([7; 32]),
            direction: PaymentDirection::Outbound,
            kind: PaymentKind::Bolt11,
            status: PaymentStatus::Pending,
            amount_msat: Some(1_000),
            fee_msat: None,
            preimage: None,
            invoice: Some("lnbcrt1...".into()),
            failure_reason: None,
            created_at_ms: 1,
            updated_at_ms: 1,
        };
        ps.insert(&p).unwrap();
        assert!(matches!(ps.insert(&p), Err(Error::DuplicatePayment(_))));
        let mut inbound = p.clone();
        inbound.direction = PaymentDirection::Inbound;
        inbound.created_at_ms = 2;
        ps.insert(&inbound).unwrap();
        let got = ps
            .update(&p.payment_hash, PaymentDirection::Outbound, |p| {
                p.status = PaymentStatus::Succeeded;
                p.fee_msat = Some(3);
                p.preimage = Some(PaymentPreimage([9; 32]));
            })
            .unwrap()
            .unwrap();
        assert_eq!(got.status, PaymentStatus::Succeeded);
        let read = ps
            .get(&p.payment_hash, PaymentDirection::Outbound)
            .unwrap()
            .unwrap();
        assert_eq!(read, got);
        let all = ps.list().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].direction, PaymentDirection::Inbound, "newest first");
        assert!(ps
            .update(&PaymentHash([1; 32]), PaymentDirection::Inbound, |_| {})
            .unwrap()
            .is_none());
    }
}
