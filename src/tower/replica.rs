//! Monitor replicas: another SQLite file (e.g. on another disk) or a remote tower over HTTP.
//!
//! A replica stores, per channel monitor, the latest full monitor with its update id and the
//! recent `ChannelMonitorUpdate`s with theirs, all encrypted with a key derived from the
//! node's seed; archiving after a channel closes is replicated too.
//! [`crate::Builder::restore_monitors_from`] rebuilds a node's monitors from a replica.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bitcoin::hex::DisplayHex;
use lightning::util::persist::{
    KVStoreSync, CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::http;
use crate::node::store::{open_connection, SqliteStore};
use crate::Error;

/// Where a replica lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaConfig {
    /// A SQLite file, typically on another disk than the node's database.
    Sqlite {
        /// Path of the replica database (created if missing).
        path: PathBuf,
    },
    /// A tower's HTTP API (see [`crate::tower::server`]).
    Tower {
        /// Base URL, `http://host:port`.
        url: String,
        /// The client token the tower issued at registration.
        token: String,
    },
}

impl ReplicaConfig {
    pub(crate) fn open(&self) -> Result<Box<dyn Replica>, Error> {
        Ok(match self {
            ReplicaConfig::Sqlite { path } => Box::new(SqliteReplica::open(path)?),
            ReplicaConfig::Tower { url, token } => Box::new(HttpReplica::new(url, token)?),
        })
    }
}

/// A monitor as a replica lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMonitor {
    /// LDK's monitor name (the persistence key).
    pub name: String,
    /// Update id of the stored full monitor.
    pub update_id: u64,
    /// Whether the channel was closed and its monitor archived.
    pub archived: bool,
}

/// What a replica can do. Calls block; they run on the replication threads.
pub(crate) trait Replica: Send + Sync {
    /// A name for logs and status.
    fn describe(&self) -> String;
    /// Stores the encrypted updates, then the encrypted full monitor at `update_id`.
    fn put_monitor(
        &self,
        name: &str,
        update_id: u64,
        monitor: &[u8],
        updates: &[(u64, Vec<u8>)],
    ) -> Result<(), String>;
    /// Marks a monitor archived (its channel is closed and fully resolved).
    fn archive_monitor(&self, name: &str) -> Result<(), String>;
    /// Whether this replica takes justice blobs (towers do).
    fn accepts_blobs(&self) -> bool;
    /// Stores a justice blob under its txid hint.
    fn put_blob(&self, hint: &[u8], blob: &[u8]) -> Result<(), String>;
    /// Every stored monitor.
    fn list_monitors(&self) -> Result<Vec<StoredMonitor>, String>;
    /// The encrypted full monitor.
    fn get_monitor(&self, name: &str) -> Result<Vec<u8>, String>;
}

/// Whether `name` looks like an LDK monitor name (`<txid>_<vout>` or a channel id).
pub(crate) fn valid_monitor_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 80
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Updates older than this many ids below the stored full monitor are pruned.
const KEEP_UPDATES: u64 = 64;

pub(crate) const MONITOR_MIGRATIONS: &[&str] = &["CREATE TABLE replica_monitors (
        client_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        update_id INTEGER NOT NULL,
        data BLOB NOT NULL,
        archived INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (client_id, name)
    );
    CREATE TABLE replica_updates (
        client_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        update_id INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (client_id, name, update_id)
    );"];

/// Stores a full monitor unless a newer one is already there (`update_id` only grows).
pub(crate) fn db_put_monitor(
    conn: &Connection,
    client: i64,
    name: &str,
    update_id: u64,
    data: &[u8],
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO replica_monitors (client_id, name, update_id, data, archived, updated_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5)
         ON CONFLICT (client_id, name) DO UPDATE SET update_id=excluded.update_id,
            data=excluded.data, updated_at=excluded.updated_at
         WHERE excluded.update_id >= replica_monitors.update_id",
        params![
            client,
            name,
            update_id as i64,
            data,
            super::now_unix() as i64
        ],
    )?;
    conn.execute(
        "DELETE FROM replica_updates WHERE client_id=?1 AND name=?2 AND update_id < ?3",
        params![client, name, update_id.saturating_sub(KEEP_UPDATES) as i64],
    )?;
    Ok(())
}

pub(crate) fn db_put_update(
    conn: &Connection,
    client: i64,
    name: &str,
    update_id: u64,
    data: &[u8],
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO replica_updates (client_id, name, update_id, data) VALUES (?1, ?2, ?3, ?4)",
        params![client, name, update_id as i64, data],
    )?;
    Ok(())
}

pub(crate) fn db_archive(conn: &Connection, client: i64, name: &str) -> rusqlite::Result<usize> {
    let n = conn.execute(
        "UPDATE replica_monitors SET archived=1, updated_at=?3 WHERE client_id=?1 AND name=?2",
        params![client, name, super::now_unix() as i64],
    )?;
    conn.execute(
        "DELETE FROM replica_updates WHERE client_id=?1 AND name=?2",
        params![client, name],
    )?;
    Ok(n)
}

pub(crate) fn db_list(conn: &Connection, client: i64) -> rusqlite::Result<Vec<StoredMonitor>> {
    let mut stmt = conn.prepare(
        "SELECT name, update_id, archived FROM replica_monitors WHERE client_id=?1 ORDER BY name",
    )?;
    let rows = stmt
        .query_map(params![client], |r| {
            Ok(StoredMonitor {
                name: r.get(0)?,
                update_id: r.get::<_, i64>(1)? as u64,
                archived: r.get::<_, i64>(2)? != 0,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(crate) fn db_get(
    conn: &Connection,
    client: i64,
    name: &str,
) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row(
        "SELECT data FROM replica_monitors WHERE client_id=?1 AND name=?2",
        params![client, name],
        |r| r.get(0),
    )
    .optional()
}

/// A replica in a SQLite file (WAL, `synchronous=FULL`): an acknowledged write is on disk.
pub struct SqliteReplica {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteReplica {
    /// Opens (creating if needed) the replica database at `path`.
    ///
    /// # Errors
    /// [`Error::Storage`] if the file cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = open_connection(path)?;
        crate::db::migrate(&conn, "monitor_replica", MONITOR_MIGRATIONS)?;
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Replica for SqliteReplica {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
    fn put_monitor(
        &self,
        name: &str,
        update_id: u64,
        monitor: &[u8],
        updates: &[(u64, Vec<u8>)],
    ) -> Result<(), String> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        for (id, u) in updates {
            db_put_update(&tx, 0, name, *id, u).map_err(|e| e.to_string())?;
        }
        db_put_monitor(&tx, 0, name, update_id, monitor).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())
    }
    fn archive_monitor(&self, name: &str) -> Result<(), String> {
        db_archive(&self.conn(), 0, name)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn accepts_blobs(&self) -> bool {
        false
    }
    fn put_blob(&self, _hint: &[u8], _blob: &[u8]) -> Result<(), String> {
        Ok(())
    }
    fn list_monitors(&self) -> Result<Vec<StoredMonitor>, String> {
        db_list(&self.conn(), 0).map_err(|e| e.to_string())
    }
    fn get_monitor(&self, name: &str) -> Result<Vec<u8>, String> {
        db_get(&self.conn(), 0, name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no monitor {name}"))
    }
}

/// A replica on a remote tower, spoken to over its HTTP API with a client token.
pub struct HttpReplica {
    url: String,
    authority: String,
    base: String,
    token: String,
    timeout: Duration,
}

impl HttpReplica {
    /// A client for the tower at `url` (`http://host:port`) using `token`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a URL that is not `http://host[:port][/base]`.
    pub fn new(url: &str, token: &str) -> Result<Self, Error> {
        let (authority, base) = http::parse_url(url).map_err(Error::InvalidConfig)?;
        Ok(Self {
            url: url.to_string(),
            authority,
            base,
            token: token.to_string(),
            timeout: Duration::from_secs(5),
        })
    }

    fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        let r = http::request(
            &self.authority,
            method,
            &format!("{}{path}", self.base),
            Some(&self.token),
            body,
            self.timeout,
        )?;
        if (200..300).contains(&r.status) {
            Ok(r.body)
        } else {
            Err(format!(
                "tower {} answered {} to {method} {path}: {}",
                self.url,
                r.status,
                String::from_utf8_lossy(&r.body)
            ))
        }
    }
}

impl Replica for HttpReplica {
    fn describe(&self) -> String {
        format!("tower:{}", self.url)
    }
    fn put_monitor(
        &self,
        name: &str,
        update_id: u64,
        monitor: &[u8],
        updates: &[(u64, Vec<u8>)],
    ) -> Result<(), String> {
        for (id, u) in updates {
            self.call("PUT", &format!("/v1/monitors/{name}/updates/{id}"), u)?;
        }
        self.call("PUT", &format!("/v1/monitors/{name}/{update_id}"), monitor)
            .map(|_| ())
    }
    fn archive_monitor(&self, name: &str) -> Result<(), String> {
        self.call("POST", &format!("/v1/monitors/{name}/archive"), &[])
            .map(|_| ())
    }
    fn accepts_blobs(&self) -> bool {
        true
    }
    fn put_blob(&self, hint: &[u8], blob: &[u8]) -> Result<(), String> {
        self.call(
            "PUT",
            &format!("/v1/blobs/{}", hint.to_lower_hex_string()),
            blob,
        )
        .map(|_| ())
    }
    fn list_monitors(&self) -> Result<Vec<StoredMonitor>, String> {
        let body = self.call("GET", "/v1/monitors", &[])?;
        serde_json::from_slice(&body).map_err(|e| format!("tower monitor list: {e}"))
    }
    fn get_monitor(&self, name: &str) -> Result<Vec<u8>, String> {
        self.call("GET", &format!("/v1/monitors/{name}"), &[])
    }
}

/// Copies every live (not archived) monitor from `replica` into the node database at
/// `store`, decrypting with `key`, and returns their names. Monitors already present locally
/// are left alone. Used by [`crate::Builder::restore_monitors_from`] after the local database
/// was lost; the restored channels are then force-closed with
/// [`crate::Node::force_close_restored_channels`].
///
/// # Errors
/// [`Error::Storage`] if the replica cannot be read or the local store written;
/// [`Error::Corrupt`] if a backup does not decrypt under the node's key (another seed).
pub(crate) fn restore_into(
    replica: &dyn Replica,
    store: &SqliteStore,
    key: &[u8; 32],
) -> Result<Vec<String>, Error> {
    let local = KVStoreSync::list(
        store,
        CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
        CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
    )?;
    let mut restored = Vec::new();
    let list = replica
        .list_monitors()
        .map_err(|e| Error::Storage(format!("{}: {e}", replica.describe())))?;
    for m in list.into_iter().filter(|m| !m.archived) {
        if local.contains(&m.name) || !valid_monitor_name(&m.name) {
            continue;
        }
        let sealed = replica
            .get_monitor(&m.name)
            .map_err(|e| Error::Storage(format!("{}: {e}", replica.describe())))?;
        let plain = super::open(key, &sealed).ok_or_else(|| {
            Error::Corrupt(format!(
                "monitor backup {} from {} does not decrypt with this node's seed",
                m.name,
                replica.describe()
            ))
        })?;
        KVStoreSync::write(
            store,
            CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
            CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
            &m.name,
            plain,
        )?;
        log::warn!(
            "restored channel monitor {} (update {}) from {}",
            m.name,
            m.update_id,
            replica.describe()
        );
        restored.push(m.name);
    }
    Ok(restored)
}

/// Lists the monitors a replica holds (live and archived).
///
/// # Errors
/// [`Error::Storage`] if the replica cannot be reached or read.
pub fn list_replica_monitors(replica: &ReplicaConfig) -> Result<Vec<StoredMonitor>, Error> {
    let r = replica.open()?;
    r.list_monitors()
        .map_err(|e| Error::Storage(format!("{}: {e}", r.describe())))
}
