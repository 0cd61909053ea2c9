//! SQLite persistence: endpoints, the outbox cursor and deliveries.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{Backlog, Delivery, DeliveryQuery, DeliveryState, Endpoint, WebhookError};
use crate::events::SharedConn;

pub(crate) use crate::events::lock;

const MIGRATIONS: &[&str] = &["CREATE TABLE webhook_endpoints (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_secret_expires_at INTEGER,
        event_types TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        after_seq INTEGER NOT NULL,
        backoff_until INTEGER NOT NULL DEFAULT 0,
        consecutive_failures INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE webhook_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        last_seq INTEGER NOT NULL
    );
    INSERT INTO webhook_cursor (id, last_seq) VALUES (0, 0);
    CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_seq INTEGER NOT NULL,
        endpoint_id INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_status INTEGER,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        last_attempt_at INTEGER,
        next_attempt_at INTEGER NOT NULL,
        delivered_at INTEGER,
        UNIQUE (event_seq, endpoint_id)
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, state, event_seq);
    CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, id);"];

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn migrate(conn: &SharedConn) -> Result<(), WebhookError> {
    crate::db::migrate(&lock(conn), "webhooks", MIGRATIONS)?;
    Ok(())
}

const ENDPOINT_COLS: &str = "id, url, secret, previous_secret, previous_secret_expires_at, event_types, enabled, created_at";

fn endpoint_from_row(r: &Row<'_>) -> rusqlite::Result<Endpoint> {
    let types: String = r.get(5)?;
    Ok(Endpoint {
        id: r.get(0)?,
        url: r.get(1)?,
        secret: r.get(2)?,
        previous_secret: r.get(3)?,
        previous_secret_expires_at_ms: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        // Written by us as a JSON array of strings; an unreadable value means "all".
        event_types: serde_json::from_str(&types).unwrap_or_default(),
        enabled: r.get::<_, i64>(6)? != 0,
        created_at_ms: r.get::<_, i64>(7)? as u64,
    })
}

pub(crate) fn insert_endpoint(
    conn: &SharedConn,
    url: &str,
    secret: &str,
    event_types: &[String],
) -> Result<Endpoint, WebhookError> {
    let mut c = lock(conn);
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let after_seq: i64 =
        tx.query_row("SELECT coalesce(max(seq), 0) FROM domain_events", [], |r| {
            r.get(0)
        })?;
    let types = serde_json::to_string(event_types).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "INSERT INTO webhook_endpoints (url, secret, event_types, enabled, created_at, after_seq)
         VALUES (?1, ?2, ?3, 1, ?4, ?5)",
        params![url, secret, types, now_ms() as i64, after_seq],
    )?;
    let id = tx.last_insert_rowid();
    let ep = get_endpoint(&tx, id)?;
    tx.commit()?;
    Ok(ep)
}

pub(crate) fn get_endpoint(conn: &Connection, id: i64) -> Result<Endpoint, WebhookError> {
    conn.query_row(
        &format!("SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE id=?1"),
        params![id],
        endpoint_from_row,
    )
    .optional()?
    .ok_or(WebhookError::UnknownEndpoint(id))
}

pub(crate) fn list_endpoints(conn: &SharedConn) -> Result<Vec<Endpoint>, WebhookError> {
    let c = lock(conn);
    let mut stmt = c.prepare(&format!(
        "SELECT {ENDPOINT_COLS} FROM webhook_endpoints ORDER BY id"
    ))?;
    let rows = stmt
        .query_map([], endpoint_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(crate) fn remove_endpoint(conn: &SharedConn, id: i64) -> Result<(), WebhookError> {
    let mut c = lock(conn);
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if tx.execute("DELETE FROM webhook_endpoints WHERE id=?1", params![id])? == 0 {
        return Err(WebhookError::UnknownEndpoint(id));
    }
    tx.execute(
        "DELETE FROM webhook_deliveries WHERE endpoint_id=?1",
        params![id],
    )?;
    tx.commit()?;
    Ok(())
}

pub(crate) fn set_enabled(
    conn: &SharedConn,
    id: i64,
    enabled: bool,
) -> Result<Endpoint, WebhookError> {
    let mut c = lock(conn);
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current = get_endpoint(&tx, id)?;
    if current.enabled != enabled {
        if enabled {
            // Deliver what is appended from now on; skip what happened while disabled.
            tx.execute(
                "UPDATE webhook_endpoints SET enabled=1, backoff_until=0, consecutive_failures=0,
                 after_seq=(SELECT coalesce(max(seq), 0) FROM domain_events) WHERE id=?1",
                params![id],
            )?;
        } else {
            tx.execute(
                "UPDATE webhook_endpoints SET enabled=0 WHERE id=?1",
                params![id],
            )?;
        }
    }
    let ep = get_endpoint(&tx, id)?;
    tx.commit()?;
    Ok(ep)
}

pub(crate) fn rotate_secret(
    conn: &SharedConn,
    id: i64,
    secret: &str,
    grace: Duration,
) -> Result<Endpoint, WebhookError> {
    let mut c = lock(conn);
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current = get_endpoint(&tx, id)?;
    let expires = now_ms().saturating_add(grace.as_millis().min(u64::MAX as u128) as u64);
    tx.execute(
        "UPDATE webhook_endpoints SET secret=?2, previous_secret=?3, previous_secret_expires_at=?4
         WHERE id=?1",
        params![
            id,
            secret,
            current.secret,
            expires.min(i64::MAX as u64) as i64
        ],
    )?;
    let ep = get_endpoint(&tx, id)?;
    tx.commit()?;
    Ok(ep)
}

const DELIVERY_COLS: &str = "id, event_seq, endpoint_id, event_type, state, attempts, last_status, last_error, created_at, last_attempt_at, next_attempt_at, delivered_at";

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    let event_seq = r.get::<_, i64>(1)? as u64;
    let endpoint_id: i64 = r.get(2)?;
    let state_s: String = r.get(4)?;
    let state = DeliveryState::parse(&state_s).unwrap_or(DeliveryState::Pending);
    let opt_ms = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|v| v as u64))
    };
    Ok(Delivery {
        id: r.get(0)?,
        webhook_id: webhook_id(event_seq, endpoint_id),
        event_seq,
        event_type: r.get(3)?,
        endpoint_id,
        state,
        attempts: r.get::<_, i64>(5)?.clamp(0, u32::MAX as i64) as u32,
        last_status: r.get::<_, Option<i64>>(6)?.map(|s| s.clamp(0, 999) as u16),
        last_error: r.get(7)?,
        created_at_ms: r.get::<_, i64>(8)? as u64,
        last_attempt_at_ms: opt_ms(9)?,
        next_attempt_at_ms: if state == DeliveryState::Pending {
            opt_ms(10)?
        } else {
            None
        },
        delivered_at_ms: opt_ms(11)?,
    })
}

/// The stable `webhook-id` of an event for an endpoint.
pub(crate) fn webhook_id(event_seq: u64, endpoint_id: i64) -> String {
    format!("evt_{event_seq}_{endpoint_id}")
}

pub(crate) fn get_delivery(conn: &Connection, id: i64) -> Result<Delivery, WebhookError> {
    conn.query_row(
        &format!("SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE id=?1"),
        params![id],
        delivery_from_row,
    )
    .optional()?
    .ok_or(WebhookError::UnknownDelivery(id))
}

pub(crate) fn list_deliveries(
    conn: &SharedConn,
    q: &DeliveryQuery,
) -> Result<Vec<Delivery>, WebhookError> {
    let c = lock(conn);
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {DELIVERY_COLS} FROM webhook_deliveries
         WHERE (?1 IS NULL OR state=?1) AND (?2 IS NULL OR endpoint_id=?2) AND id > ?3
         ORDER BY id LIMIT ?4"
    ))?;
    let rows = stmt
        .query_map(
            params![
                q.state.map(|s| s.as_str()),
                q.endpoint_id,
                q.after_id.unwrap_or(0),
                q.limit.min(1000) as i64
            ],
            delivery_from_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(crate) fn retry_dead(conn: &SharedConn, id: i64) -> Result<Delivery, WebhookError> {
    let mut c = lock(conn);
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let d = get_delivery(&tx, id)?;
    if d.state != DeliveryState::Dead {
        return Err(WebhookError::NotDead(id));
    }
    let now = now_ms() as i64;
    tx.execute(
        "UPDATE webhook_deliveries SET state='pending', created_at=?2, next_attempt_at=?2 WHERE id=?1",
        params![id, now],
    )?;
    let d = get_delivery(&tx, id)?;
    tx.commit()?;
    Ok(d)
}

pub(crate) fn backlog(conn: &SharedConn) -> Result<Backlog, WebhookError> {
    let c = lock(conn);
    let (pending, oldest): (i64, Option<i64>) = c.query_row(
        "SELECT count(*), min(created_at) FROM webhook_deliveries WHERE state='pending'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let dead: i64 = c.query_row(
        "SELECT count(*) FROM webhook_deliveries WHERE state='dead'",
        [],
        |r| r.get(0),
    )?;
    let behind: i64 = c.query_row(
        "SELECT count(*) FROM domain_events WHERE seq > (SELECT last_seq FROM webhook_cursor WHERE id=0)",
        [],
        |r| r.get(0),
    )?;
    Ok(Backlog {
        pending: pending as u64,
        dead: dead as u64,
        oldest_pending_at_ms: oldest.map(|v| v as u64),
        events_behind: behind as u64,
    })
}

/// One outbox step, in one transaction: read up to `limit` events after the cursor, insert a
/// delivery per matching enabled endpoint, advance the cursor. Returns (events read, deliveries
/// created).
pub(crate) fn enqueue_batch(
    conn: &SharedConn,
    limit: usize,
) -> Result<(usize, usize), WebhookError> {
    let mut c = lock(conn);
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let cursor: i64 = tx.query_row("SELECT last_seq FROM webhook_cursor WHERE id=0", [], |r| {
        r.get(0)
    })?;
    let events: Vec<(i64, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT seq, event_type FROM domain_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![cursor, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows
    };
    let Some(&(last, _)) = events.last() else {
        return Ok((0, 0));
    };
    let endpoints: Vec<(Endpoint, i64)> = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {ENDPOINT_COLS}, after_seq FROM webhook_endpoints WHERE enabled=1"
        ))?;
        let rows = stmt
            .query_map([], |r| Ok((endpoint_from_row(r)?, r.get::<_, i64>(8)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows
    };
    let now = now_ms() as i64;
    let mut created = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO webhook_deliveries
             (event_seq, endpoint_id, event_type, state, created_at, next_attempt_at)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
        )?;
        for (seq, event_type) in &events {
            for (ep, after_seq) in &endpoints {
                if *seq > *after_seq && ep.wants(event_type) {
                    created += insert.execute(params![seq, ep.id, event_type, now])?;
                }
            }
        }
    }
    tx.execute(
        "UPDATE webhook_cursor SET last_seq=?1 WHERE id=0",
        params![last],
    )?;
    tx.commit()?;
    Ok((events.len(), created))
}

/// What the dispatcher needs to send one delivery.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) delivery_id: i64,
    pub(crate) endpoint: Endpoint,
    pub(crate) webhook_id: String,
    pub(crate) body: String,
}

/// Enabled endpoints that are not backing off at `now`.
pub(crate) fn ready_endpoints(conn: &SharedConn, now: u64) -> Result<Vec<Endpoint>, WebhookError> {
    let c = lock(conn);
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE enabled=1 AND backoff_until <= ?1 ORDER BY id"
    ))?;
    let rows = stmt
        .query_map(params![now as i64], endpoint_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Up to `limit` due pending deliveries of `endpoint`, in event order, skipping `exclude`.
pub(crate) fn due_jobs(
    conn: &SharedConn,
    endpoint: &Endpoint,
    now: u64,
    limit: usize,
    exclude: &dyn Fn(i64) -> bool,
) -> Result<Vec<Job>, WebhookError> {
    let c = lock(conn);
    let mut stmt = c.prepare_cached(
        "SELECT d.id, d.event_seq, e.payload FROM webhook_deliveries d
         LEFT JOIN domain_events e ON e.seq = d.event_seq
         WHERE d.endpoint_id=?1 AND d.state='pending' AND d.next_attempt_at <= ?2
         ORDER BY d.event_seq LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![endpoint.id, now as i64, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut jobs = Vec::new();
    for (id, seq, payload) in rows {
        if exclude(id) {
            continue;
        }
        let Some(body) = payload else {
            c.execute(
                "UPDATE webhook_deliveries SET state='dead', last_error='event missing from the event log' WHERE id=?1",
                params![id],
            )?;
            continue;
        };
        jobs.push(Job {
            delivery_id: id,
            endpoint: endpoint.clone(),
            webhook_id: webhook_id(seq as u64, endpoint.id),
            body,
        });
    }
    Ok(jobs)
}

/// When the next pending delivery of an enabled endpoint becomes due, if after `now`.
pub(crate) fn next_due_after(conn: &SharedConn, now: u64) -> Result<Option<u64>, WebhookError> {
    let c = lock(conn);
    let t: Option<i64> = c.query_row(
        "SELECT min(max(d.next_attempt_at, e.backoff_until)) FROM webhook_deliveries d
         JOIN webhook_endpoints e ON e.id = d.endpoint_id
         WHERE d.state='pending' AND e.enabled=1 AND max(d.next_attempt_at, e.backoff_until) > ?1",
        params![now as i64],
        |r| r.get(0),
    )?;
    Ok(t.map(|t| t as u64))
}

pub(crate) fn record_success(
    conn: &SharedConn,
    delivery_id: i64,
    endpoint_id: i64,
    status: u16,
) -> Result<(), WebhookError> {
    let mut c = lock(conn);
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = now_ms() as i64;
    tx.execute(
        "UPDATE webhook_deliveries SET state='delivered', attempts=attempts+1, last_status=?2,
         last_error=NULL, last_attempt_at=?3, delivered_at=?3 WHERE id=?1",
        params![delivery_id, status as i64, now],
    )?;
    tx.execute(
        "UPDATE webhook_endpoints SET backoff_until=0, consecutive_failures=0 WHERE id=?1",
        params![endpoint_id],
    )?;
    tx.commit()?;
    Ok(())
}

/// How a failed attempt is rescheduled.
pub(crate) struct Failure<'a> {
    pub(crate) status: Option<u16>,
    pub(crate) error: &'a str,
    /// The endpoint itself looks down: back off the whole endpoint.
    pub(crate) endpoint_down: bool,
}

/// Records a failed attempt: reschedules with `backoff(attempts)` (capped at the horizon) or
/// dead-letters once the horizon has passed. Returns the new state.
pub(crate) fn record_failure(
    conn: &SharedConn,
    delivery_id: i64,
    endpoint_id: i64,
    failure: &Failure<'_>,
    horizon: Duration,
    backoff: &dyn Fn(u32) -> Duration,
) -> Result<Option<DeliveryState>, WebhookError> {
    let mut c = lock(conn);
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = now_ms();
    let horizon_ms = horizon.as_millis().min(i64::MAX as u128) as u64;
    let row: Option<(i64, i64, String)> = tx
        .query_row(
            "SELECT attempts, created_at, state FROM webhook_deliveries WHERE id=?1",
            params![delivery_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    // Removed meanwhile (endpoint deleted): nothing to record.
    let Some((attempts, created, state)) = row else {
        return Ok(None);
    };
    let attempts = (attempts.max(0) as u32).saturating_add(1);
    let give_up_at = (created as u64).saturating_add(horizon_ms);
    let error: String = failure.error.chars().take(500).collect();
    let new_state;
    let mut next = now;
    if state != "pending" {
        // Dead-lettered while in flight: keep the state, record the attempt.
        new_state = DeliveryState::parse(&state).unwrap_or(DeliveryState::Dead);
    } else if now >= give_up_at {
        new_state = DeliveryState::Dead;
    } else {
        new_state = DeliveryState::Pending;
        let delay = backoff(attempts).as_millis().min(u64::MAX as u128) as u64;
        next = now.saturating_add(delay).min(give_up_at);
    }
    tx.execute(
        "UPDATE webhook_deliveries SET state=?2, attempts=?3, last_status=?4, last_error=?5,
         last_attempt_at=?6, next_attempt_at=?7 WHERE id=?1",
        params![
            delivery_id,
            new_state.as_str(),
            attempts as i64,
            failure.status.map(|s| s as i64),
            error,
            now as i64,
            next as i64
        ],
    )?;
    if failure.endpoint_down {
        let fails: i64 = tx
            .query_row(
                "UPDATE webhook_endpoints SET consecutive_failures=consecutive_failures+1
                 WHERE id=?1 RETURNING consecutive_failures",
                params![endpoint_id],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(1);
        let until = if new_state == DeliveryState::Pending {
            next
        } else {
            let delay = backoff(fails.clamp(1, u32::MAX as i64) as u32);
            now.saturating_add(delay.as_millis().min(u64::MAX as u128) as u64)
        };
        tx.execute(
            "UPDATE webhook_endpoints SET backoff_until=max(backoff_until, ?2) WHERE id=?1",
            params![endpoint_id, until as i64],
        )?;
        // The endpoint is down: whatever else waited past the horizon is dead too.
        tx.execute(
            "UPDATE webhook_deliveries SET state='dead',
             last_error=coalesce(last_error, 'endpoint unreachable until the horizon: ' || ?3)
             WHERE endpoint_id=?1 AND state='pending' AND created_at <= ?2",
            params![endpoint_id, now.saturating_sub(horizon_ms) as i64, error],
        )?;
    }
    tx.commit()?;
    Ok(Some(new_state))
}
