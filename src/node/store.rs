//! One SQLite database per node: LDK's key-value data, the BDK wallet and the domain tables.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so a write that returned is on disk:
//! LDK is told a `ChannelMonitor` update is `Completed` only after [`SqliteStore::write`]
//! returned, which makes the monitor durable before LDK relies on it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use lightning::io;
use lightning::util::persist::{KVStore, KVStoreSync, MigratableKVStore};
use rusqlite::{params, Connection, OptionalExtension};

use crate::Error;

/// The database file's name inside the node's storage directory.
pub const DB_FILE_NAME: &str = "lightkeeper.sqlite";

type AsyncResult<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, io::Error>> + 'a + Send>>;

/// Opens a connection with the node's pragmas: WAL, `synchronous=FULL`, a busy timeout and
/// foreign keys on.
///
/// # Errors
/// [`Error::Storage`] when the file cannot be opened or a pragma is refused.
pub fn open_connection(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path)
        .map_err(|e| Error::Storage(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Storage(format!(
            "SQLite refused WAL mode (got {mode})"
        )));
    }
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    Ok(conn)
}

/// LDK's [`KVStore`]/[`KVStoreSync`] over the node's SQLite database, plus the connection the
/// node's own tables (payments, events) use.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs the schema migrations.
    ///
    /// # Errors
    /// [`Error::Storage`] when the file cannot be opened or migrated.
    pub fn open(path: impl AsRef<Path>) -> Result<Arc<Self>, Error> {
        let path = path.as_ref().to_path_buf();
        let conn = open_connection(&path)?;
        migrate(&conn)?;

        Ok(Arc::new(Self {
            path,
            conn: Mutex::new(conn),
        }))
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Locks the shared connection for the node's own tables.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the shared connection with `synchronous=NORMAL`: its commits are not fsynced
    /// on their own, but the next ordinary commit (every monitor update) fsyncs the WAL and them
    /// with it. A process crash loses nothing; a power cut can lose only these writes since the
    /// last fsync. For data that may be a moment stale without risk to funds: the channel
    /// manager (LDK reconciles it against the monitors), the network graph and scorer, and
    /// acknowledgements of handled events (an unacknowledged event is handed out again).
    pub(crate) fn relaxed<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        let conn = self.conn();
        if let Err(e) = conn.execute_batch("PRAGMA synchronous=NORMAL") {
            log::warn!("PRAGMA synchronous=NORMAL: {e}");
        }
        let out = f(&conn);
        if let Err(e) = conn.execute_batch("PRAGMA synchronous=FULL") {
            // Never leave the connection relaxed: monitors depend on FULL.
            log::error!("PRAGMA synchronous=FULL failed ({e}); reopen the node");
        }
        out
    }

    /// Writes a key like [`KVStoreSync::write`], without its own fsync (see
    /// [`SqliteStore::relaxed`]).
    ///
    /// # Errors
    /// As [`KVStoreSync::write`].
    pub(crate) fn write_relaxed(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        buf: Vec<u8>,
    ) -> Result<(), io::Error> {
        check_key(primary, secondary, Some(key))?;
        self.relaxed(|c| write_kv(c, primary, secondary, key, buf))
    }
}

fn write_kv(
    conn: &Connection,
    primary: &str,
    secondary: &str,
    key: &str,
    buf: Vec<u8>,
) -> Result<(), io::Error> {
    conn.prepare_cached(
        "INSERT INTO ldk_kv (primary_namespace, secondary_namespace, key, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (primary_namespace, secondary_namespace, key) DO UPDATE SET value=excluded.value",
    )
    .and_then(|mut st| st.execute(params![primary, secondary, key, buf]))
    .map_err(io_err)?;
    Ok(())
}

/// Schema versions, applied in order inside one transaction each.
const MIGRATIONS: &[&str] = &[
    // 1: LDK key-value data.
    "CREATE TABLE ldk_kv (
        primary_namespace TEXT NOT NULL,
        secondary_namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (primary_namespace, secondary_namespace, key)
    ) WITHOUT ROWID;",
    // 2: payments and the node's event queue.
    "CREATE TABLE payments (
        payment_hash TEXT NOT NULL,
        direction TEXT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        amount_msat INTEGER,
        fee_msat INTEGER,
        preimage TEXT,
        invoice TEXT,
        failure_reason TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (payment_hash, direction)
    );
    CREATE INDEX payments_created ON payments (created_at);
    CREATE TABLE node_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event BLOB NOT NULL
    );",
];

fn migrate(conn: &Connection) -> Result<(), Error> {
    crate::db::migrate(conn, "node", MIGRATIONS)
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::Other, e.to_string())
}

fn check_key(primary: &str, secondary: &str, key: Option<&str>) -> Result<(), io::Error> {
    use lightning::util::persist::{KVSTORE_NAMESPACE_KEY_ALPHABET, KVSTORE_NAMESPACE_KEY_MAX_LEN};
    let ok = |s: &str| {
        s.len() <= KVSTORE_NAMESPACE_KEY_MAX_LEN
            && s.chars()
                .all(|c| KVSTORE_NAMESPACE_KEY_ALPHABET.contains(c))
    };
    if primary.is_empty() && !secondary.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "secondary namespace without a primary namespace",
        ));
    }
    if !ok(primary) || !ok(secondary) || key.is_some_and(|k| k.is_empty() || !ok(k)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid namespace or key",
        ));
    }
    Ok(())
}

impl KVStoreSync for SqliteStore {
    fn read(&self, primary: &str, secondary: &str, key: &str) -> Result<Vec<u8>, io::Error> {
        check_key(primary, secondary, Some(key))?;
        self.conn()
            .query_row(
                "SELECT value FROM ldk_kv WHERE primary_namespace=?1 AND secondary_namespace=?2 AND key=?3",
                params![primary, secondary, key],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map_err(io_err)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{primary}/{secondary}/{key}")))
    }

    fn write(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        buf: Vec<u8>,
    ) -> Result<(), io::Error> {
        check_key(primary, secondary, Some(key))?;
        write_kv(&self.conn(), primary, secondary, key, buf)
    }

    fn remove(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        _lazy: bool,
    ) -> Result<(), io::Error> {
        check_key(primary, secondary, Some(key))?;
        self.conn()
            .execute(
                "DELETE FROM ldk_kv WHERE primary_namespace=?1 AND secondary_namespace=?2 AND key=?3",
                params![primary, secondary, key],
            )
            .map_err(io_err)?;
        Ok(())
    }

    fn list(&self, primary: &str, secondary: &str) -> Result<Vec<String>, io::Error> {
        check_key(primary, secondary, None)?;
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT key FROM ldk_kv WHERE primary_namespace=?1 AND secondary_namespace=?2",
            )
            .map_err(io_err)?;
        let keys = stmt
            .query_map(params![primary, secondary], |r| r.get::<_, String>(0))
            .map_err(io_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_err)?;
        Ok(keys)
    }
}

impl MigratableKVStore for SqliteStore {
    fn list_all_keys(&self) -> Result<Vec<(String, String, String)>, io::Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT primary_namespace, secondary_namespace, key FROM ldk_kv")
            .map_err(io_err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(io_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_err)?;
        Ok(rows)
    }
}

/// The async interface runs the (fast, local) SQLite call at once and returns a ready future,
/// so writes keep their order per key as LDK requires.
impl KVStore for SqliteStore {
    fn read(&self, p: &str, s: &str, k: &str) -> AsyncResult<'static, Vec<u8>> {
        let r = KVStoreSync::read(self, p, s, k);
        Box::pin(async move { r })
    }
    fn write(&self, p: &str, s: &str, k: &str, buf: Vec<u8>) -> AsyncResult<'static, ()> {
        let r = KVStoreSync::write(self, p, s, k, buf);
        Box::pin(async move { r })
    }
    fn remove(&self, p: &str, s: &str, k: &str, lazy: bool) -> AsyncResult<'static, ()> {
        let r = KVStoreSync::remove(self, p, s, k, lazy);
        Box::pin(async move { r })
    }
    fn list(&self, p: &str, s: &str) -> AsyncResult<'static, Vec<String>> {
        let r = KVStoreSync::list(self, p, s);
        Box::pin(async move { r })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_roundtrip_list_remove_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE_NAME);
        {
            let store = SqliteStore::open(&path).unwrap();
            KVStoreSync::write(&*store, "monitors", "", "abc_1", vec![1, 2, 3]).unwrap();
            KVStoreSync::write(&*store, "monitors", "", "abc_1", vec![4]).unwrap();
            KVStoreSync::write(&*store, "monitors", "", "def_0", vec![5]).unwrap();
            KVStoreSync::write(&*store, "", "", "manager", vec![9]).unwrap();
            let mut keys = KVStoreSync::list(&*store, "monitors", "").unwrap();
            keys.sort();
            assert_eq!(keys, vec!["abc_1".to_string(), "def_0".to_string()]);
            KVStoreSync::remove(&*store, "monitors", "", "def_0", false).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            KVStoreSync::read(&*store, "monitors", "", "abc_1").unwrap(),
            vec![4]
        );
        assert_eq!(
            KVStoreSync::read(&*store, "", "", "manager").unwrap(),
            vec![9]
        );
        let err = KVStoreSync::read(&*store, "monitors", "", "def_0").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(store.list_all_keys().unwrap().len(), 2);
        let mode: String = store
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        store.write_relaxed("", "", "manager", vec![10]).unwrap();
        assert_eq!(
            KVStoreSync::read(&*store, "", "", "manager").unwrap(),
            vec![10]
        );
        let sync: i64 = store
            .conn()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "a relaxed write restores synchronous=FULL");
    }

    #[test]
    fn invalid_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join(DB_FILE_NAME)).unwrap();
        assert!(KVStoreSync::write(&*store, "", "sec", "k", vec![]).is_err());
        assert!(KVStoreSync::write(&*store, "a", "", "bad key!", vec![]).is_err());
        assert!(KVStoreSync::write(&*store, "a", "", "", vec![]).is_err());
    }
}
