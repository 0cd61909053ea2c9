//! Node configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bitcoin::Network;
use lightning::util::config::UserConfig;

use crate::node::chain::ChainSourceConfig;

/// Default per-channel on-chain reserve for fee-bumping anchor channels, in sat.
pub const DEFAULT_ANCHOR_RESERVE_SAT: u64 = 25_000;

/// Default blocks a hold invoice's payer must leave between the chain tip and the HTLC's expiry
/// (the invoice's `min_final_cltv_expiry_delta`): 144 blocks, about a day. The node fails a held
/// payment back 39 blocks (LDK's `HTLC_FAIL_BACK_BUFFER`) before that expiry, so the merchant has
/// at least 105 blocks, about 17 hours (more when the payer adds a random CLTV offset), to
/// settle or cancel it.
pub const DEFAULT_HOLD_CLTV_EXPIRY_DELTA: u16 = 144;

/// Everything a [`crate::Node`] is built from. Use [`crate::Builder`] to fill it.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bitcoin network.
    pub network: Network,
    /// Directory holding the database and the mnemonic file.
    pub storage_dir: PathBuf,
    /// Where the chain data comes from.
    pub chain_source: ChainSourceConfig,
    /// Addresses to listen on for Lightning peers (port 0 picks a free port).
    pub listening_addresses: Vec<SocketAddr>,
    /// Public node alias (at most 32 bytes), announced only with announced channels.
    pub alias: Option<String>,
    /// On-chain reserve kept per anchor channel for fee bumping, in sat.
    pub anchor_reserve_per_channel_sat: u64,
    /// Whether spontaneous (keysend) payments are accepted.
    pub accept_keysend: bool,
    /// Final CLTV expiry delta of hold invoices, in blocks: how long a held payment can wait
    /// for the merchant's decision (see [`DEFAULT_HOLD_CLTV_EXPIRY_DELTA`]).
    pub hold_cltv_expiry_delta: u16,
    /// How often the chain is polled and the wallet synced.
    pub sync_interval: Duration,
    /// How often fee estimates are refreshed.
    pub fee_update_interval: Duration,
    /// LDK's channel configuration. The builder sets anchors on and manual acceptance of
    /// inbound channels (needed to check the anchor reserve); other fields are the caller's.
    pub user_config: UserConfig,
}

/// LDK settings the node starts from.
pub fn default_user_config() -> UserConfig {
    let mut c = UserConfig::default();
    c.channel_handshake_config
        .negotiate_anchors_zero_fee_htlc_tx = true;
    c.channel_handshake_config.announce_for_forwarding = false;
    c.channel_handshake_limits
        .force_announced_channel_preference = false;
    c.manually_accept_inbound_channels = true;
    // A merchant exists to receive: let the peer have up to the whole channel in flight to us.
    c.channel_handshake_config
        .max_inbound_htlc_value_in_flight_percent_of_channel = 100;
    c
}
