//! The tower: an HTTP API for clients (register, put justice blobs and monitor backups, read
//! status), SQLite storage, and a chain watcher that punishes revoked commitments.
//!
//! The watcher polls bitcoind's RPC interface; for every transaction of every new block it
//! looks up blobs stored under the txid's first 16 bytes, decrypts each with SHA256(txid),
//! checks that the decrypted transaction spends that txid and broadcasts it, then
//! re-broadcasts it until it confirms. Every punishment is logged and counted in
//! [`TowerMetrics`].
//!
//! API (all bodies raw bytes unless noted; clients authenticate with
//! `Authorization: Bearer <token>`):
//!
//! | method and path | what |
//! | --- | --- |
//! | `POST /v1/register` | new client (admin token if configured); JSON `{client_id, token, quota_bytes, quota_blobs}` |
//! | `PUT /v1/blobs/{hint}` | a justice blob under a 32-hex-digit hint |
//! | `PUT /v1/monitors/{name}/{update_id}` | an encrypted full monitor backup |
//! | `PUT /v1/monitors/{name}/updates/{update_id}` | an encrypted monitor update |
//! | `POST /v1/monitors/{name}/archive` | the channel closed |
//! | `GET /v1/monitors`, `GET /v1/monitors/{name}` | list (JSON) / fetch backups |
//! | `GET /v1/status` | the client's usage, quota and punishments (JSON) |
//! | `GET /v1/metrics` | tower-wide counters (JSON, no authentication) |

// Handlers return axum `Response`s as errors; boxing them would only add noise.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::{Transaction, Txid};
use lightning_block_sync::http::{HttpEndpoint, JsonResponse};
use lightning_block_sync::rpc::RpcClient;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::replica::{
    db_archive, db_get, db_list, db_put_monitor, db_put_update, valid_monitor_name,
    MONITOR_MIGRATIONS,
};
use super::{justice_key, now_unix, HINT_LEN, NONCE_LEN, TAG_LEN};
use crate::node::store::open_connection;
use crate::Error;

/// Smallest plausible justice blob: nonce, tag and a one-input, one-output transaction.
const MIN_BLOB: usize = NONCE_LEN + TAG_LEN + 60;

/// bitcoind's RPC endpoint for the chain watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitcoindRpc {
    /// Host name or IP address.
    pub host: String,
    /// RPC port.
    pub port: u16,
    /// RPC user (or the cookie's user part).
    pub user: String,
    /// RPC password.
    pub password: String,
}

/// Tower settings.
#[derive(Debug, Clone)]
pub struct TowerConfig {
    /// Where the API listens (use a loopback address or put TLS in front of it).
    pub listen: SocketAddr,
    /// The tower's SQLite database.
    pub db_path: PathBuf,
    /// The chain watcher's bitcoind; without it the tower only stores.
    pub bitcoind: Option<BitcoindRpc>,
    /// Token `POST /v1/register` requires; `None` lets anyone register.
    pub admin_token: Option<String>,
    /// Storage quota per client, in bytes (blobs plus monitor backups).
    pub quota_bytes: u64,
    /// Justice blobs per client.
    pub quota_blobs: u64,
    /// Largest justice blob accepted.
    pub max_blob_bytes: usize,
    /// Largest request body (monitor backups).
    pub max_body_bytes: usize,
    /// How often the watcher polls for new blocks.
    pub poll_interval: Duration,
    /// How often an unconfirmed justice transaction is re-broadcast.
    pub rebroadcast_interval: Duration,
}

impl TowerConfig {
    /// Defaults: 64 MiB and 100 000 blobs per client, 2 KiB blobs, 16 MiB bodies, 5 s polls,
    /// 60 s re-broadcasts, open registration.
    pub fn new(listen: SocketAddr, db_path: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            db_path: db_path.into(),
            bitcoind: None,
            admin_token: None,
            quota_bytes: 64 * 1024 * 1024,
            quota_blobs: 100_000,
            max_blob_bytes: 2048,
            max_body_bytes: 16 * 1024 * 1024,
            poll_interval: Duration::from_secs(5),
            rebroadcast_interval: Duration::from_secs(60),
        }
    }
}

/// Tower-wide counters, from [`Tower::metrics`] or `GET /v1/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TowerMetrics {
    /// Registered clients.
    pub clients: u64,
    /// Stored justice blobs.
    pub blobs: u64,
    /// Blocks the watcher scanned.
    pub blocks_scanned: u64,
    /// Height of the last scanned block.
    pub tip_height: u64,
    /// Revoked commitments seen on chain with a matching blob.
    pub breaches_detected: u64,
    /// Justice transaction broadcasts (first ones and re-broadcasts).
    pub justice_broadcasts: u64,
    /// Justice transactions seen confirmed.
    pub justice_confirmed: u64,
    /// Requests refused (authentication, validation, quota).
    pub rejected_requests: u64,
    /// Blobs that matched a hint but did not decrypt or did not spend the commitment.
    pub bad_blobs: u64,
}

#[derive(Default)]
struct Counters {
    blocks_scanned: AtomicU64,
    tip_height: AtomicU64,
    breaches_detected: AtomicU64,
    justice_broadcasts: AtomicU64,
    justice_confirmed: AtomicU64,
    rejected_requests: AtomicU64,
    bad_blobs: AtomicU64,
}

/// A punishment as `GET /v1/status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Punishment {
    /// The revoked commitment seen on chain.
    pub commitment_txid: String,
    /// The justice transaction broadcast.
    pub justice_txid: String,
    /// Height the commitment was seen at.
    pub detected_height: u64,
    /// How often the justice transaction was broadcast.
    pub broadcasts: u64,
    /// Height it confirmed at.
    pub confirmed_height: Option<u64>,
}

/// A client's view of its account, from `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStatus {
    /// The client's id.
    pub client_id: i64,
    /// Its name.
    pub name: String,
    /// Stored justice blobs.
    pub blobs: u64,
    /// Stored monitor backups (live and archived).
    pub monitors: u64,
    /// Bytes used.
    pub bytes_used: u64,
    /// Byte quota.
    pub quota_bytes: u64,
    /// Blob quota.
    pub quota_blobs: u64,
    /// Punishments made for it.
    pub punishments: Vec<Punishment>,
}

/// A registration, from `POST /v1/register` or [`Tower::register_client`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The client's id.
    pub client_id: i64,
    /// The bearer token (shown once; the tower keeps its hash).
    pub token: String,
    /// Byte quota.
    pub quota_bytes: u64,
    /// Blob quota.
    pub quota_blobs: u64,
}

const TOWER_MIGRATIONS: &[&str] = &["CREATE TABLE tower_clients (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        quota_bytes INTEGER NOT NULL,
        quota_blobs INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE tower_blobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        client_id INTEGER NOT NULL REFERENCES tower_clients(id),
        hint BLOB NOT NULL,
        blob BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (client_id, hint, blob)
    );
    CREATE INDEX tower_blobs_hint ON tower_blobs (hint);
    CREATE TABLE tower_punishments (
        commitment_txid TEXT NOT NULL,
        client_id INTEGER NOT NULL,
        justice_txid TEXT NOT NULL,
        justice_tx BLOB NOT NULL,
        detected_height INTEGER NOT NULL,
        broadcasts INTEGER NOT NULL DEFAULT 0,
        last_broadcast INTEGER NOT NULL DEFAULT 0,
        confirmed_height INTEGER,
        last_error TEXT,
        PRIMARY KEY (commitment_txid, client_id)
    );
    CREATE TABLE tower_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"];

struct TowerState {
    config: TowerConfig,
    conn: Mutex<Connection>,
    counters: Counters,
}

impl TowerState {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn metrics(&self) -> TowerMetrics {
        let c = &self.counters;
        let (clients, blobs) = {
            let conn = self.conn();
            let q = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap_or(0) as u64;
            (
                q("SELECT COUNT(*) FROM tower_clients"),
                q("SELECT COUNT(*) FROM tower_blobs"),
            )
        };
        TowerMetrics {
            clients,
            blobs,
            blocks_scanned: c.blocks_scanned.load(Ordering::Relaxed),
            tip_height: c.tip_height.load(Ordering::Relaxed),
            breaches_detected: c.breaches_detected.load(Ordering::Relaxed),
            justice_broadcasts: c.justice_broadcasts.load(Ordering::Relaxed),
            justice_confirmed: c.justice_confirmed.load(Ordering::Relaxed),
            rejected_requests: c.rejected_requests.load(Ordering::Relaxed),
            bad_blobs: c.bad_blobs.load(Ordering::Relaxed),
        }
    }

    fn register(&self, name: &str) -> Result<Registration, rusqlite::Error> {
        let token = rand::random::<[u8; 32]>().to_lower_hex_string();
        let hash = sha256::Hash::hash(token.as_bytes()).to_byte_array();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO tower_clients (name, token_hash, quota_bytes, quota_blobs, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                name,
                &hash[..],
                self.config.quota_bytes as i64,
                self.config.quota_blobs as i64,
                now_unix() as i64
            ],
        )?;
        let client_id = conn.last_insert_rowid();
        log::info!("tower: registered client {client_id} ({name})");
        Ok(Registration {
            client_id,
            token,
            quota_bytes: self.config.quota_bytes,
            quota_blobs: self.config.quota_blobs,
        })
    }

    fn reject(&self, status: StatusCode, msg: impl Into<String>) -> Response {
        self.counters
            .rejected_requests
            .fetch_add(1, Ordering::Relaxed);
        let msg = msg.into();
        log::debug!("tower: rejected request: {status} {msg}");
        (status, msg).into_response()
    }

    /// The client a bearer token belongs to, with its quotas.
    fn auth(&self, headers: &HeaderMap) -> Result<(i64, u64, u64), Response> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| self.reject(StatusCode::UNAUTHORIZED, "missing bearer token"))?;
        let hash = sha256::Hash::hash(token.as_bytes()).to_byte_array();
        let row = self
            .conn()
            .query_row(
                "SELECT id, quota_bytes, quota_blobs FROM tower_clients WHERE token_hash=?1",
                params![&hash[..]],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                },
            )
            .optional()
            .map_err(|e| internal(&e))?;
        row.ok_or_else(|| self.reject(StatusCode::UNAUTHORIZED, "unknown token"))
    }

    fn bytes_used(conn: &Connection, client: i64) -> rusqlite::Result<u64> {
        let q = |sql: &str| {
            conn.query_row(sql, params![client], |r| r.get::<_, Option<i64>>(0))
                .map(|v| v.unwrap_or(0) as u64)
        };
        Ok(
            q("SELECT SUM(LENGTH(blob)) FROM tower_blobs WHERE client_id=?1")?
                + q("SELECT SUM(LENGTH(data)) FROM replica_monitors WHERE client_id=?1")?
                + q("SELECT SUM(LENGTH(data)) FROM replica_updates WHERE client_id=?1")?,
        )
    }
}

fn internal(e: &dyn std::fmt::Display) -> Response {
    log::error!("tower: internal error: {e}");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

#[derive(Deserialize, Default)]
struct RegisterBody {
    #[serde(default)]
    name: String,
}

async fn register(State(s): State<Arc<TowerState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(admin) = &s.config.admin_token {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(admin.as_str()) {
            return s.reject(
                StatusCode::UNAUTHORIZED,
                "registration needs the admin token",
            );
        }
    }
    let req: RegisterBody = if body.is_empty() {
        RegisterBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return s.reject(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")),
        }
    };
    if req.name.len() > 64 {
        return s.reject(StatusCode::BAD_REQUEST, "name longer than 64 bytes");
    }
    match s.register(&req.name) {
        Ok(r) => (StatusCode::CREATED, Json(r)).into_response(),
        Err(e) => internal(&e),
    }
}

async fn put_blob(
    State(s): State<Arc<TowerState>>,
    headers: HeaderMap,
    Path(hint): Path<String>,
    body: Bytes,
) -> Response {
    let (client, quota_bytes, quota_blobs) = match s.auth(&headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let hint = match <[u8; HINT_LEN]>::from_hex(&hint) {
        Ok(h) => h,
        Err(_) => return s.reject(StatusCode::BAD_REQUEST, "hint must be 32 hex digits"),
    };
    if body.len() > s.config.max_blob_bytes {
        return s.reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("blob larger than {} bytes", s.config.max_blob_bytes),
        );
    }
    if body.len() < MIN_BLOB {
        return s.reject(
            StatusCode::BAD_REQUEST,
            "blob too short to be a justice blob",
        );
    }
    let res = {
        let conn = s.conn();
        let count: i64 = match conn.query_row(
            "SELECT COUNT(*) FROM tower_blobs WHERE client_id=?1",
            params![client],
            |r| r.get(0),
        ) {
            Ok(c) => c,
            Err(e) => return internal(&e),
        };
        let used = match TowerState::bytes_used(&conn, client) {
            Ok(u) => u,
            Err(e) => return internal(&e),
        };
        if count as u64 >= quota_blobs || used + body.len() as u64 > quota_bytes {
            drop(conn);
            return s.reject(StatusCode::INSUFFICIENT_STORAGE, "quota exceeded");
        }
        conn.execute(
            "INSERT OR IGNORE INTO tower_blobs (client_id, hint, blob, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![client, &hint[..], &body[..], now_unix() as i64],
        )
    };
    match res {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => internal(&e),
    }
}

fn check_monitor_put(
    s: &TowerState,
    headers: &HeaderMap,
    name: &str,
    len: usize,
) -> Result<i64, Response> {
    let (client, quota_bytes, _) = s.auth(headers)?;
    if !valid_monitor_name(name) {
        return Err(s.reject(StatusCode::BAD_REQUEST, "invalid monitor name"));
    }
    if len < NONCE_LEN + TAG_LEN {
        return Err(s.reject(StatusCode::BAD_REQUEST, "backup too short"));
    }
    let used = TowerState::bytes_used(&s.conn(), client).map_err(|e| internal(&e))?;
    if used + len as u64 > quota_bytes {
        return Err(s.reject(StatusCode::INSUFFICIENT_STORAGE, "quota exceeded"));
    }
    Ok(client)
}

async fn put_monitor(
    State(s): State<Arc<TowerState>>,
    headers: HeaderMap,
    Path((name, update_id)): Path<(String, u64)>,
    body: Bytes,
) -> Response {
    let client = match check_monitor_put(&s, &headers, &name, body.len()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match db_put_monitor(&s.conn(), client, &name, update_id, &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => internal(&e),
    }
}

async fn put_update(
    State(s): State<Arc<TowerState>>,
    headers: HeaderMap,
    Path((name, update_id)): Path<(String, u64)>,
    body: Bytes,
) -> Response {
    let client = match check_monitor_put(&s, &headers, &name, body.len()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match db_put_update(&s.conn(), client, &name, update_id, &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => internal(&e),
    }
}

async fn archive_monitor(
    State(s): State<Arc<TowerState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let (client, _, _) = match s.auth(&headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !valid_monitor_name(&name) {
        return s.reject(StatusCode::BAD_REQUEST, "invalid monitor name");
    }
    match db_archive(&s.conn(), client, &name) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => internal(&e),
    }
}

async fn list_monitors(State(s): State<Arc<TowerState>>, headers: HeaderMap) -> Response {
    let (client, _, _) = match s.auth(&headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match db_list(&s.conn(), client) {
        Ok(l) => Json(l).into_response(),
        Err(e) => internal(&e),
    }
}

async fn get_monitor(
    State(s): State<Arc<TowerState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let (client, _, _) = match s.auth(&headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match db_get(&s.conn(), client, &name) {
        Ok(Some(b)) => b.into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such monitor").into_response(),
        Err(e) => internal(&e),
    }
}

async fn status(State(s): State<Arc<TowerState>>, headers: HeaderMap) -> Response {
    let (client, quota_bytes, quota_blobs) = match s.auth(&headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let res = (|| -> rusqlite::Result<ClientStatus> {
        let conn = s.conn();
        let name: String = conn.query_row(
            "SELECT name FROM tower_clients WHERE id=?1",
            params![client],
            |r| r.get(0),
        )?;
        let count = |sql: &str| {
            conn.query_row(sql, params![client], |r| r.get::<_, i64>(0))
                .map(|v| v as u64)
        };
        let blobs = count("SELECT COUNT(*) FROM tower_blobs WHERE client_id=?1")?;
        let monitors = count("SELECT COUNT(*) FROM replica_monitors WHERE client_id=?1")?;
        let mut stmt = conn.prepare(
            "SELECT commitment_txid, justice_txid, detected_height, broadcasts, confirmed_height
             FROM tower_punishments WHERE client_id=?1 ORDER BY detected_height",
        )?;
        let punishments = stmt
            .query_map(params![client], |r| {
                Ok(Punishment {
                    commitment_txid: r.get(0)?,
                    justice_txid: r.get(1)?,
                    detected_height: r.get::<_, i64>(2)? as u64,
                    broadcasts: r.get::<_, i64>(3)? as u64,
                    confirmed_height: r.get::<_, Option<i64>>(4)?.map(|h| h as u64),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClientStatus {
            client_id: client,
            name,
            blobs,
            monitors,
            bytes_used: TowerState::bytes_used(&conn, client)?,
            quota_bytes,
            quota_blobs,
            punishments,
        })
    })();
    match res {
        Ok(st) => Json(st).into_response(),
        Err(e) => internal(&e),
    }
}

async fn metrics(State(s): State<Arc<TowerState>>) -> Response {
    Json(s.metrics()).into_response()
}

// ---- chain watcher -------------------------------------------------------------------------

struct Json2(serde_json::Value);
impl TryFrom<JsonResponse> for Json2 {
    type Error = std::io::Error;
    fn try_from(r: JsonResponse) -> std::io::Result<Self> {
        Ok(Json2(r.0))
    }
}

struct Watcher {
    state: Arc<TowerState>,
    rpc: RpcClient,
}

impl Watcher {
    async fn call(
        &self,
        method: &str,
        args: &[serde_json::Value],
    ) -> Result<serde_json::Value, String> {
        self.rpc
            .call_method::<Json2>(method, args)
            .await
            .map(|j| j.0)
            .map_err(|e| e.to_string())
    }

    fn state_get(&self, key: &str) -> Option<u64> {
        self.state
            .conn()
            .query_row(
                "SELECT value FROM tower_state WHERE key=?1",
                params![key],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .ok()
            .flatten()
            .map(|v| v as u64)
    }

    fn state_set(&self, key: &str, v: u64) {
        let _ = self.state.conn().execute(
            "INSERT INTO tower_state (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            params![key, v as i64],
        );
    }

    async fn broadcast(&self, tx_bytes: &[u8]) -> Result<(), String> {
        match self
            .call(
                "sendrawtransaction",
                &[tx_bytes.to_lower_hex_string().into()],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.contains("already") || e.contains("txn-already-known") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Checks one block's transactions against the stored hints.
    async fn scan_block(&self, height: u64) -> Result<(), String> {
        let hash = self.call("getblockhash", &[height.into()]).await?;
        let block = self.call("getblock", &[hash, 1.into()]).await?;
        let txids: Vec<Txid> = block["tx"]
            .as_array()
            .ok_or("getblock: no tx list")?
            .iter()
            .filter_map(|t| t.as_str()?.parse().ok())
            .collect();
        let mut to_broadcast = Vec::new();
        {
            let conn = self.state.conn();
            for txid in &txids {
                let t = txid.to_string();
                let n = conn
                    .execute(
                        "UPDATE tower_punishments SET confirmed_height=?2 WHERE justice_txid=?1 AND confirmed_height IS NULL",
                        params![t, height as i64],
                    )
                    .map_err(|e| e.to_string())?;
                if n > 0 {
                    self.state
                        .counters
                        .justice_confirmed
                        .fetch_add(n as u64, Ordering::Relaxed);
                    log::info!("tower: justice transaction {t} confirmed at height {height}");
                }
                let hint = super::txid_hint(txid);
                let mut stmt = conn
                    .prepare_cached("SELECT client_id, blob FROM tower_blobs WHERE hint=?1")
                    .map_err(|e| e.to_string())?;
                let matches = stmt
                    .query_map(params![&hint[..]], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                    })
                    .map_err(|e| e.to_string())?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                for (client, blob) in matches {
                    let tx = super::open(&justice_key(txid), &blob)
                        .and_then(|p| bitcoin::consensus::deserialize::<Transaction>(&p).ok())
                        .filter(|tx| tx.input.iter().any(|i| i.previous_output.txid == *txid));
                    let Some(tx) = tx else {
                        // A hint collision, or a client's garbage: never fatal.
                        self.state
                            .counters
                            .bad_blobs
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let justice_txid = tx.compute_txid();
                    let raw = bitcoin::consensus::serialize(&tx);
                    let inserted = conn
                        .execute(
                            "INSERT OR IGNORE INTO tower_punishments
                             (commitment_txid, client_id, justice_txid, justice_tx, detected_height)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![t, client, justice_txid.to_string(), raw, height as i64],
                        )
                        .map_err(|e| e.to_string())?;
                    if inserted > 0 {
                        self.state
                            .counters
                            .breaches_detected
                            .fetch_add(1, Ordering::Relaxed);
                        log::warn!(
                            "tower: BREACH revoked commitment {t} of client {client} at height {height}; broadcasting justice transaction {justice_txid}"
                        );
                        to_broadcast.push((t.clone(), client));
                    }
                }
            }
        }
        for (t, client) in to_broadcast {
            self.broadcast_punishment(&t, client).await;
        }
        Ok(())
    }

    async fn broadcast_punishment(&self, commitment_txid: &str, client: i64) {
        let row = self
            .state
            .conn()
            .query_row(
                "SELECT justice_tx, justice_txid FROM tower_punishments WHERE commitment_txid=?1 AND client_id=?2",
                params![commitment_txid, client],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?)),
            )
            .optional();
        let Ok(Some((raw, justice_txid))) = row else {
            return;
        };
        let res = self.broadcast(&raw).await;
        self.state
            .counters
            .justice_broadcasts
            .fetch_add(1, Ordering::Relaxed);
        match &res {
            Ok(()) => log::info!("tower: broadcast justice transaction {justice_txid}"),
            Err(e) => {
                log::warn!("tower: broadcast of justice transaction {justice_txid} failed: {e}")
            }
        }
        let _ = self.state.conn().execute(
            "UPDATE tower_punishments SET broadcasts=broadcasts+1, last_broadcast=?3, last_error=?4
             WHERE commitment_txid=?1 AND client_id=?2",
            params![commitment_txid, client, now_unix() as i64, res.err()],
        );
    }

    async fn rebroadcast(&self) {
        let due = now_unix().saturating_sub(self.state.config.rebroadcast_interval.as_secs());
        let rows: Vec<(String, i64)> = {
            let conn = self.state.conn();
            let Ok(mut stmt) = conn.prepare(
                "SELECT commitment_txid, client_id FROM tower_punishments
                 WHERE confirmed_height IS NULL AND last_broadcast <= ?1",
            ) else {
                return;
            };
            stmt.query_map(params![due as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                .map(|it| it.filter_map(Result::ok).collect())
                .unwrap_or_default()
        };
        for (t, c) in rows {
            self.broadcast_punishment(&t, c).await;
        }
    }

    async fn poll(&self) -> Result<(), String> {
        let tip = self
            .call("getblockcount", &[])
            .await?
            .as_u64()
            .ok_or("getblockcount: not a number")?;
        let mut next = match self.state_get("scanned_height") {
            Some(h) => h + 1,
            None => tip,
        };
        // At most 1000 blocks per poll keeps one iteration bounded.
        let end = tip.min(next + 999);
        while next <= end {
            self.scan_block(next).await?;
            self.state_set("scanned_height", next);
            self.state
                .counters
                .blocks_scanned
                .fetch_add(1, Ordering::Relaxed);
            self.state
                .counters
                .tip_height
                .store(next, Ordering::Relaxed);
            next += 1;
        }
        self.rebroadcast().await;
        Ok(())
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.poll().await {
                log::warn!("tower: chain watcher: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.state.config.poll_interval) => {},
                _ = stop.changed() => break,
            }
        }
    }
}

// ---- the running tower -----------------------------------------------------------------------

/// A running tower; stops when dropped or on [`Tower::stop`].
pub struct Tower {
    addr: SocketAddr,
    state: Arc<TowerState>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tower {
    /// Opens the database, binds the API and starts the watcher, on a thread of its own.
    ///
    /// # Errors
    /// [`Error::Storage`] if the database cannot be opened or the address bound.
    pub fn start(config: TowerConfig) -> Result<Tower, Error> {
        if let Some(dir) = config.db_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = open_connection(&config.db_path)?;
        crate::db::migrate(&conn, "tower", TOWER_MIGRATIONS)?;
        crate::db::migrate(&conn, "monitor_replica", MONITOR_MIGRATIONS)?;
        let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
            Error::Storage(format!("tower cannot listen on {}: {e}", config.listen))
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(TowerState {
            config: config.clone(),
            conn: Mutex::new(conn),
            counters: Counters::default(),
        });
        let app = Router::new()
            .route("/v1/register", post(register))
            .route("/v1/blobs/{hint}", put(put_blob))
            .route("/v1/monitors", get(list_monitors))
            .route("/v1/monitors/{name}", get(get_monitor))
            .route("/v1/monitors/{name}/archive", post(archive_monitor))
            .route("/v1/monitors/{name}/{update_id}", put(put_monitor))
            .route("/v1/monitors/{name}/updates/{update_id}", put(put_update))
            .route("/v1/status", get(status))
            .route("/v1/metrics", get(metrics))
            .layer(DefaultBodyLimit::max(config.max_body_bytes))
            .with_state(Arc::clone(&state));
        let (stop, stop_rx) = watch::channel(false);
        let watcher = config.bitcoind.as_ref().map(|b| {
            use base64::Engine;
            let creds = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", b.user, b.password));
            Watcher {
                state: Arc::clone(&state),
                rpc: RpcClient::new(
                    &creds,
                    HttpEndpoint::for_host(b.host.clone()).with_port(b.port),
                ),
            }
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lk-tower")
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("lk-tower-main".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            log::error!("tower: {e}");
                            return;
                        }
                    };
                    let mut w_stop = stop_rx.clone();
                    let watcher = watcher.map(|w| tokio::spawn(w.run(stop_rx.clone())));
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                        let _ = w_stop.changed().await;
                    });
                    if let Err(e) = serve.await {
                        log::error!("tower: server stopped: {e}");
                    }
                    if let Some(w) = watcher {
                        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })?;
        log::info!("tower listening on {addr}");
        Ok(Tower {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API's base URL, for [`crate::tower::ReplicaConfig::Tower`].
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers a client directly (as `POST /v1/register` with the admin token would).
    ///
    /// # Errors
    /// [`Error::Storage`] if the database write fails.
    pub fn register_client(&self, name: &str) -> Result<Registration, Error> {
        Ok(self.state.register(name)?)
    }

    /// Current counters.
    pub fn metrics(&self) -> TowerMetrics {
        self.state.metrics()
    }

    /// Stops the API and the watcher and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Tower {
    fn drop(&mut self) {
        self.shutdown();
    }
}
