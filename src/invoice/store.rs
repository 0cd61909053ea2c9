//! The `invoices` table: schema, row mapping and queries. Everything here runs on a connection
//! or transaction the service holds.

use std::str::FromStr;

use rusqlite::{params, Connection, OptionalExtension, Row};
use rust_decimal::Decimal;

use super::{FiatPrice, Invoice, InvoiceError, InvoicePage, InvoiceQuery, InvoiceStatus};
use crate::backend::Hash32;

pub(super) const MIGRATIONS: &[&str] = &["CREATE TABLE invoices (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        external_ref TEXT UNIQUE,
        payment_hash TEXT NOT NULL UNIQUE,
        bolt11 TEXT NOT NULL,
        status TEXT NOT NULL,
        amount_msat INTEGER,
        fiat_amount TEXT,
        currency TEXT,
        btc_price TEXT,
        rate_source TEXT,
        rate_fetched_at INTEGER,
        description TEXT NOT NULL,
        metadata TEXT NOT NULL,
        hold INTEGER NOT NULL,
        preimage TEXT,
        received_msat INTEGER,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        accepted_at INTEGER,
        settled_at INTEGER,
        closed_at INTEGER
    );
    CREATE INDEX invoices_by_status ON invoices (status, n);
    CREATE INDEX invoices_open_by_expiry ON invoices (expires_at) WHERE status = 'open';"];

const COLUMNS: &str = "id, external_ref, payment_hash, bolt11, status, amount_msat, fiat_amount,
    currency, btc_price, rate_source, rate_fetched_at, description, metadata, hold, preimage,
    received_msat, created_at, expires_at, accepted_at, settled_at, closed_at";

fn corrupt(col: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        rusqlite::types::Type::Text,
        format!("invoices: {what}").into(),
    )
}

fn opt_u64(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<u64>> {
    Ok(r.get::<_, Option<i64>>(i)?.map(|v| v as u64))
}

fn dec(col: usize, s: &str) -> rusqlite::Result<Decimal> {
    Decimal::from_str(s).map_err(|e| corrupt(col, format!("bad decimal {s:?}: {e}")))
}

fn row_to_invoice(r: &Row<'_>) -> rusqlite::Result<Invoice> {
    let hash: String = r.get(2)?;
    let status: String = r.get(4)?;
    let fiat = match (
        r.get::<_, Option<String>>(6)?,
        r.get::<_, Option<String>>(7)?,
        r.get::<_, Option<String>>(8)?,
    ) {
        (Some(amount), Some(currency), Some(price)) => Some(FiatPrice {
            amount: dec(6, &amount)?,
            currency,
            btc_price: dec(8, &price)?,
            source: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
            fetched_at_unix: opt_u64(r, 10)?.unwrap_or(0),
        }),
        _ => None,
    };
    let metadata: String = r.get(12)?;
    let preimage = r
        .get::<_, Option<String>>(14)?
        .map(|p| Hash32::from_str(&p).map_err(|e| corrupt(14, e.to_string())))
        .transpose()?;
    Ok(Invoice {
        id: r.get(0)?,
        external_ref: r.get(1)?,
        payment_hash: Hash32::from_str(&hash).map_err(|e| corrupt(2, e.to_string()))?,
        bolt11: r.get(3)?,
        status: InvoiceStatus::from_str(&status).map_err(|e| corrupt(4, e.to_string()))?,
        amount_msat: opt_u64(r, 5)?,
        fiat,
        description: r.get(11)?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| corrupt(12, format!("bad metadata: {e}")))?,
        hold: r.get::<_, i64>(13)? != 0,
        preimage,
        received_msat: opt_u64(r, 15)?,
        created_at: r.get::<_, i64>(16)? as u64,
        expires_at: r.get::<_, i64>(17)? as u64,
        accepted_at: opt_u64(r, 18)?,
        settled_at: opt_u64(r, 19)?,
        closed_at: opt_u64(r, 20)?,
    })
}

/// Which column to look an invoice up by.
#[derive(Clone, Copy)]
pub(super) enum Key<'a> {
    Id(&'a str),
    Hash(&'a Hash32),
    Reference(&'a str),
}

pub(super) fn get(conn: &Connection, key: Key<'_>) -> Result<Option<Invoice>, InvoiceError> {
    let (col, val) = match key {
        Key::Id(id) => ("id", id.to_string()),
        Key::Hash(h) => ("payment_hash", h.to_string()),
        Key::Reference(r) => ("external_ref", r.to_string()),
    };
    let sql = format!("SELECT {COLUMNS} FROM invoices WHERE {col} = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![val], row_to_invoice)
        .optional()?)
}

pub(super) fn insert(conn: &Connection, inv: &Invoice) -> Result<(), rusqlite::Error> {
    let fiat = inv.fiat.as_ref();
    conn.prepare_cached(&format!(
        "INSERT INTO invoices ({COLUMNS}) VALUES
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
    ))?
    .execute(params![
        inv.id,
        inv.external_ref,
        inv.payment_hash.to_string(),
        inv.bolt11,
        inv.status.as_str(),
        inv.amount_msat.map(|v| v as i64),
        fiat.map(|f| f.amount.to_string()),
        fiat.map(|f| f.currency.clone()),
        fiat.map(|f| f.btc_price.to_string()),
        fiat.map(|f| f.source.clone()),
        fiat.map(|f| f.fetched_at_unix as i64),
        inv.description,
        inv.metadata.to_string(),
        inv.hold as i64,
        inv.preimage.map(|p| p.to_string()),
        inv.received_msat.map(|v| v as i64),
        inv.created_at as i64,
        inv.expires_at as i64,
        inv.accepted_at.map(|v| v as i64),
        inv.settled_at.map(|v| v as i64),
        inv.closed_at.map(|v| v as i64),
    ])?;
    Ok(())
}

/// Writes the mutable columns of `inv` if its stored status is still `expected`; returns
/// whether a row changed.
pub(super) fn update_if(
    conn: &Connection,
    inv: &Invoice,
    expected: InvoiceStatus,
) -> Result<bool, InvoiceError> {
    let n = conn
        .prepare_cached(
            "UPDATE invoices SET status = ?2, received_msat = ?3, preimage = ?4,
                accepted_at = ?5, settled_at = ?6, closed_at = ?7
             WHERE id = ?1 AND status = ?8",
        )?
        .execute(params![
            inv.id,
            inv.status.as_str(),
            inv.received_msat.map(|v| v as i64),
            inv.preimage.map(|p| p.to_string()),
            inv.accepted_at.map(|v| v as i64),
            inv.settled_at.map(|v| v as i64),
            inv.closed_at.map(|v| v as i64),
            expected.as_str(),
        ])?;
    Ok(n == 1)
}

/// Ids of open invoices whose expiry is at or before `now`, oldest expiry first.
pub(super) fn overdue(
    conn: &Connection,
    now: u64,
    limit: usize,
) -> Result<Vec<String>, InvoiceError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM invoices WHERE status = 'open' AND expires_at <= ?1
         ORDER BY expires_at LIMIT ?2",
    )?;
    let ids = stmt
        .query_map(params![now as i64, limit as i64], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}

pub(super) fn list(conn: &Connection, q: &InvoiceQuery) -> Result<InvoicePage, InvoiceError> {
    if q.limit == 0 || q.limit > 500 {
        return Err(InvoiceError::InvalidInput(format!(
            "page size must be between 1 and 500, got {}",
            q.limit
        )));
    }
    let before = match &q.cursor {
        None => i64::MAX,
        Some(c) => c.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
            InvoiceError::InvalidInput(format!(
                "cursor {c:?} is not one this service returned; pass next_cursor unchanged"
            ))
        })?,
    };
    let status = q.status.map(|s| s.as_str());
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, n FROM invoices WHERE n < ?1 AND (?2 IS NULL OR status = ?2)
         ORDER BY n DESC LIMIT ?3"
    ))?;
    let mut rows = stmt
        .query_map(params![before, status, (q.limit + 1) as i64], |r| {
            Ok((row_to_invoice(r)?, r.get::<_, i64>(21)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if rows.len() > q.limit {
        rows.truncate(q.limit);
        rows.last().map(|(_, n)| n.to_string())
    } else {
        None
    };
    Ok(InvoicePage {
        invoices: rows.into_iter().map(|(i, _)| i).collect(),
        next_cursor,
    })
}
