//! Shared SQLite helpers: every component keeps its tables in the node's one database file and
//! migrates them under its own name.

use rusqlite::{params, Connection, OptionalExtension};

pub use crate::node::store::open_connection;

/// Applies `migrations[version..]` for `component`, each in its own transaction, recording the
/// version in the `lk_migrations` table. Idempotent.
///
/// # Errors
/// [`crate::Error::Storage`] when a statement fails (the failing migration is rolled back).
pub fn migrate(
    conn: &Connection,
    component: &str,
    migrations: &[&str],
) -> Result<(), crate::Error> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS lk_migrations (component TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL)",
    )?;
    let version: i64 = conn
        .query_row(
            "SELECT version FROM lk_migrations WHERE component=?1",
            params![component],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    for (i, sql) in migrations.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)
            .map_err(|e| crate::Error::Storage(format!("{component} migration {}: {e}", i + 1)))?;
        tx.execute(
            "INSERT INTO lk_migrations (component, version) VALUES (?1, ?2)
             ON CONFLICT (component) DO UPDATE SET version=excluded.version",
            params![component, (i + 1) as i64],
        )?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_per_component() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("db.sqlite")).unwrap();
        migrate(&conn, "a", &["CREATE TABLE a1 (x INTEGER);"]).unwrap();
        migrate(
            &conn,
            "a",
            &[
                "CREATE TABLE a1 (x INTEGER);",
                "CREATE TABLE a2 (y INTEGER);",
            ],
        )
        .unwrap();
        migrate(&conn, "b", &["CREATE TABLE b1 (x INTEGER);"]).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN ('a1','a2','b1')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
    }
}
