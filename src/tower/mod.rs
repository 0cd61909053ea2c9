//! Watchtower-style protection of channel funds.
//!
//! - [`persist`]: a [`persist::ReplicatedPersister`] that writes every `ChannelMonitor` (and
//!   every `ChannelMonitorUpdate`) locally and to replicas — another SQLite file or a remote
//!   tower — before LDK may rely on it, and that hands a tower one encrypted *justice blob*
//!   per revoked counterparty commitment.
//! - [`replica`]: the replicas themselves ([`replica::SqliteReplica`],
//!   [`replica::HttpReplica`]); [`crate::Builder::restore_monitors_from`] rebuilds a node's
//!   monitors from one after its local database was lost.
//! - [`server`]: the tower: an HTTP API, SQLite storage and a chain watcher that broadcasts
//!   the justice transaction when a revoked commitment confirms.
//! - [`breach`]: node methods to recover restored channels, plus a test-only role that
//!   broadcasts a revoked commitment.
//!
//! See `docs/watchtower.md` for the threat model.

pub mod breach;
mod http;
pub mod persist;
pub mod replica;
pub mod server;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::Txid;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

pub use persist::{ReplicaHealth, ReplicationConfig, ReplicationMode, ReplicationStatus};
pub use replica::{list_replica_monitors, ReplicaConfig, StoredMonitor};
pub use server::{Tower, TowerConfig, TowerMetrics};

/// Length of the txid hint a justice blob is indexed by.
pub const HINT_LEN: usize = 16;
/// Length of the nonce in front of every encrypted blob.
pub const NONCE_LEN: usize = 12;
/// Length of the Poly1305 tag at the end of every encrypted blob.
pub const TAG_LEN: usize = 16;

/// The hint a justice blob for `commitment_txid` is stored under: the txid's first 16 bytes
/// (in the txid's internal byte order). It does not reveal the decryption key, which is the
/// SHA256 of the whole txid.
pub fn txid_hint(commitment_txid: &Txid) -> [u8; HINT_LEN] {
    let mut h = [0u8; HINT_LEN];
    h.copy_from_slice(&commitment_txid.to_byte_array()[..HINT_LEN]);
    h
}

/// The key a justice blob for `commitment_txid` is encrypted with: SHA256 of the txid bytes.
pub fn justice_key(commitment_txid: &Txid) -> [u8; 32] {
    sha256::Hash::hash(&commitment_txid.to_byte_array()).to_byte_array()
}

/// Encrypts `plaintext` with ChaCha20-Poly1305 under `key` and a random nonce; the result is
/// `nonce || ciphertext || tag`.
pub fn seal(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let nonce: [u8; NONCE_LEN] = rand::random();
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), plaintext)
        .expect("ChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Decrypts a blob made by [`seal`]; `None` if it is too short or does not authenticate under
/// `key`.
pub fn open(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    cipher
        .decrypt(
            Nonce::from_slice(&sealed[..NONCE_LEN]),
            &sealed[NONCE_LEN..],
        )
        .ok()
}

/// Derives the key monitor backups are encrypted with from a secret of the node's seed, so
/// that replicas (and the tower) only hold ciphertext and the same mnemonic can restore them.
pub(crate) fn backup_key(seed_secret: &[u8; 32]) -> [u8; 32] {
    let mut engine = sha256::Hash::engine();
    bitcoin::hashes::HashEngine::input(&mut engine, b"lightkeeper/monitor-replica/v1");
    bitcoin::hashes::HashEngine::input(&mut engine, seed_secret);
    sha256::Hash::from_engine(engine).to_byte_array()
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let txid: Txid = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
            .parse()
            .unwrap();
        let key = justice_key(&txid);
        let sealed = seal(&key, b"justice");
        assert_eq!(open(&key, &sealed).unwrap(), b"justice");
        let mut bad = sealed.clone();
        bad[NONCE_LEN] ^= 1;
        assert!(open(&key, &bad).is_none());
        assert!(open(&[0u8; 32], &sealed).is_none());
        assert!(open(&key, &sealed[..10]).is_none());
        assert_eq!(&txid_hint(&txid)[..], &txid.to_byte_array()[..16]);
    }
}
