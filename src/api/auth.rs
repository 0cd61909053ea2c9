//! Bearer tokens with scopes, stored as SHA-256 hashes in the node database.
//!
//! A token is `lk_` followed by 64 hex characters (32 random bytes). Only its SHA-256 hash is
//! stored; a presented token is hashed and compared with every stored hash in constant time.
//! Scopes nest: `admin` allows everything, `invoices` allows invoice changes and reading,
//! `read` allows reading only.

use std::sync::{Arc, RwLock};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::hex::DisplayHex;
use rusqlite::params;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::events::{lock, SharedConn};
use crate::Error;

/// What a token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read everything except secrets.
    Read,
    /// Create and cancel invoices (and read).
    Invoices,
    /// Everything: payments, channels, on-chain, webhooks, tokens.
    Admin,
}

impl Scope {
    /// `read`, `invoices` or `admin`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Invoices => "invoices",
            Scope::Admin => "admin",
        }
    }

    /// Parses `read`, `invoices` or `admin`.
    pub fn parse(s: &str) -> Option<Scope> {
        match s.trim() {
            "read" => Some(Scope::Read),
            "invoices" => Some(Scope::Invoices),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    /// Whether a token with this scope may do what `needed` guards.
    pub fn allows(&self, needed: Scope) -> bool {
        *self >= needed
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// Stable id.
    pub id: i64,
    /// A label for humans.
    pub name: String,
    /// The granted scope.
    pub scope: Scope,
    /// The first characters of the token (`lk_1a2b…`), to recognise it.
    pub prefix: String,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
}

#[derive(Clone)]
struct Record {
    info: TokenInfo,
    hash: [u8; 32],
}

/// The token table with an in-memory copy of the hashes.
#[derive(Clone)]
pub struct TokenStore {
    conn: SharedConn,
    cache: Arc<RwLock<Vec<Record>>>,
}

const MIGRATIONS: &[&str] = &["CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        prefix TEXT NOT NULL,
        hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );"];

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    sha256::Hash::hash(token.as_bytes()).to_byte_array()
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the optimiser from short-cutting the loop.
    std::hint::black_box(diff) == 0
}

/// A new random token: `lk_` + 64 hex characters.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("lk_{}", bytes.as_hex())
}

impl TokenStore {
    /// Opens the store on the node database, creating its table if needed.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn open(conn: SharedConn) -> Result<Self, Error> {
        crate::db::migrate(&lock(&conn), "api_tokens", MIGRATIONS)?;
        let store = Self {
            conn,
            cache: Arc::new(RwLock::new(Vec::new())),
        };
        store.reload()?;
        Ok(store)
    }

    fn reload(&self) -> Result<(), Error> {
        let conn = lock(&self.conn);
        let mut stmt = conn.prepare(
            "SELECT id, name, scope, prefix, hash, created_at FROM api_tokens ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::new();
        for (id, name, scope, prefix, hash, created) in rows {
            let scope = Scope::parse(&scope)
                .ok_or_else(|| Error::Corrupt(format!("api token {id}: scope {scope:?}")))?;
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| Error::Corrupt(format!("api token {id}: bad hash")))?;
            out.push(Record {
                info: TokenInfo {
                    id,
                    name,
                    scope,
                    prefix,
                    created_at_ms: created as u64,
                },
                hash,
            });
        }
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = out;
        Ok(())
    }

    /// Creates a token; the returned string is shown once and never stored.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty or overlong name, [`Error::Storage`].
    pub fn create(&self, name: &str, scope: Scope) -> Result<(TokenInfo, String), Error> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(Error::InvalidInput(
                "token name must be 1 to 100 characters".into(),
            ));
        }
        let token = generate_token();
        let prefix = format!("{}…", &token[..9]);
        let now = crate::node::payments::now_ms();
        let id = {
            let conn = lock(&self.conn);
            conn.execute(
                "INSERT INTO api_tokens (name, scope, prefix, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, scope.as_str(), prefix, hash_token(&token).to_vec(), now as i64],
            )?;
            conn.last_insert_rowid()
        };
        self.reload()?;
        let info = self
            .list()
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| Error::Storage("token vanished".into()))?;
        Ok((info, token))
    }

    /// Every token, by id.
    pub fn list(&self) -> Vec<TokenInfo> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|r| r.info.clone())
            .collect()
    }

    /// Revokes a token. Returns whether it existed.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn revoke(&self, id: i64) -> Result<bool, Error> {
        let n = lock(&self.conn).execute("DELETE FROM api_tokens WHERE id=?1", params![id])?;
        self.reload()?;
        Ok(n > 0)
    }

    /// The token matching `presented`, if any. Every stored hash is compared, in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<TokenInfo> {
        let h = hash_token(presented);
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for r in cache.iter() {
            if constant_time_eq(&r.hash, &h) && found.is_none() {
                found = Some(r.info.clone());
            }
        }
        found
    }

    /// Whether any token exists (a fresh node has none and mints an admin token).
    pub fn is_empty(&self) -> bool {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn tokens_are_hashed_scoped_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open_connection(&dir.path().join("db.sqlite")).unwrap();
        let store = TokenStore::open(Arc::new(Mutex::new(conn))).unwrap();
        assert!(store.is_empty());
        let (info, token) = store.create("ci", Scope::Invoices).unwrap();
        assert!(token.starts_with("lk_") && token.len() == 67);
        assert_eq!(store.authenticate(&token).unwrap().id, info.id);
        assert!(store.authenticate("lk_wrong").is_none());
        assert!(Scope::Invoices.allows(Scope::Read));
        assert!(!Scope::Invoices.allows(Scope::Admin));
        // Only the hash is stored.
        let stored: Vec<u8> = lock(&store.conn)
            .query_row("SELECT hash FROM api_tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, hash_token(&token).to_vec());
        assert!(store.revoke(info.id).unwrap());
        assert!(store.authenticate(&token).is_none());
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
