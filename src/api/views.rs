//! Request and response bodies of the REST API.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Scope, TokenInfo};

/// `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthView {
    /// `ok` or `degraded`.
    pub status: String,
    /// The Lightning node is running.
    pub node_running: bool,
    /// Seconds since the API started.
    pub uptime_secs: u64,
    /// Unix time of the last chain sync.
    pub last_chain_sync_unix: Option<u64>,
    /// Webhook deliveries waiting.
    pub webhooks_pending: Option<u64>,
    /// Webhook deliveries dead-lettered.
    pub webhooks_dead: Option<u64>,
    /// Rate providers whose breaker is not closed.
    pub rate_providers_down: Vec<String>,
}

/// Channel counts for `status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelSummary {
    /// Usable channels.
    pub active: usize,
    /// All channels.
    pub total: usize,
    /// Sum of channel sizes, sat.
    pub capacity_sat: u64,
}

/// On-chain and Lightning balances.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct BalancesView {
    /// Confirmed on-chain, sat.
    pub onchain_confirmed_sat: u64,
    /// Unconfirmed on-chain, sat.
    pub onchain_unconfirmed_sat: u64,
    /// Spendable on-chain (less the anchor reserve), sat.
    pub onchain_spendable_sat: u64,
    /// Our side of all channels, msat.
    pub lightning_local_msat: u64,
    /// The peers' side of all channels, msat.
    pub lightning_remote_msat: u64,
    /// What we can send now, msat.
    pub lightning_outbound_msat: u64,
    /// What we can receive now, msat.
    pub lightning_inbound_msat: u64,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusView {
    /// Node public key, hex.
    pub node_id: String,
    /// `bitcoin`, `testnet`, `signet` or `regtest`.
    pub network: String,
    /// Whether the node runs.
    pub running: bool,
    /// Listening addresses.
    pub addresses: Vec<String>,
    /// Unix time of the last chain sync.
    pub last_chain_sync_unix: Option<u64>,
    /// Seconds since the API started.
    pub uptime_secs: u64,
    /// Connected peers.
    pub peers_connected: usize,
    /// Channels.
    pub channels: ChannelSummary,
    /// Balances.
    pub balances: BalancesView,
}

/// A channel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelView {
    /// Channel id, hex.
    pub channel_id: String,
    /// Our id for the channel (decimal string).
    pub user_channel_id: String,
    /// Peer node id, hex.
    pub counterparty: String,
    /// Funding outpoint `txid:vout`, once known.
    pub funding_txo: Option<String>,
    /// Size, sat.
    pub capacity_sat: u64,
    /// Our balance, msat.
    pub local_balance_msat: u64,
    /// The peer's balance, msat.
    pub remote_balance_msat: u64,
    /// What we can send now, msat.
    pub outbound_msat: u64,
    /// What we can receive now, msat.
    pub inbound_msat: u64,
    /// Funding confirmed and both sides ready.
    pub ready: bool,
    /// Ready and the peer connected.
    pub usable: bool,
    /// Announced.
    pub public: bool,
    /// We opened it.
    pub outbound: bool,
    /// Funding confirmations.
    pub confirmations: Option<u32>,
}

/// Liquidity of one channel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelLiquidity {
    /// Channel id, hex.
    pub channel_id: String,
    /// Peer node id, hex.
    pub counterparty: String,
    /// Size, sat.
    pub capacity_sat: u64,
    /// What we can send, msat.
    pub outbound_msat: u64,
    /// What we can receive, msat.
    pub inbound_msat: u64,
    /// outbound / (outbound + inbound), 0..1.
    pub outbound_ratio: f64,
    /// inbound / (outbound + inbound), 0..1.
    pub inbound_ratio: f64,
}

/// `GET /v1/liquidity`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LiquidityView {
    /// Per channel.
    pub channels: Vec<ChannelLiquidity>,
    /// Total outbound, msat.
    pub total_outbound_msat: u64,
    /// Total inbound, msat.
    pub total_inbound_msat: u64,
    /// Total outbound ratio.
    pub outbound_ratio: f64,
    /// Total inbound ratio.
    pub inbound_ratio: f64,
}

/// A peer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeerView {
    /// Node id, hex.
    pub node_id: String,
    /// `host:port`, when known.
    pub address: Option<String>,
    /// Connected now.
    pub connected: bool,
    /// Reconnected automatically.
    pub persisted: bool,
}

/// `POST /v1/peers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectPeerRequest {
    /// Node id, hex.
    pub node_id: String,
    /// `host:port`.
    pub address: String,
    /// Reconnect after restarts (default true).
    pub persist: Option<bool>,
}

/// A payment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentView {
    /// Payment hash, hex.
    pub payment_hash: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// `bolt11`, `bolt11_hold` or `keysend`.
    pub kind: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Amount, msat.
    pub amount_msat: Option<u64>,
    /// Fee paid, msat (outbound).
    pub fee_msat: Option<u64>,
    /// Preimage, hex, once known.
    pub preimage: Option<String>,
    /// The BOLT11 invoice.
    pub invoice: Option<String>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Created, Unix ms.
    pub created_at_ms: u64,
    /// Last change, Unix ms.
    pub updated_at_ms: u64,
}

/// Filter of `GET /v1/payments`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PaymentsQuery {
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    /// At most this many (default 50, at most 1000), newest first.
    pub limit: Option<u32>,
}

/// `POST /v1/payments`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// BOLT11 invoice.
    pub invoice: String,
    /// Amount for an open-amount invoice, msat.
    pub amount_msat: Option<u64>,
    /// Routing fee limit, msat.
    pub max_fee_msat: Option<u64>,
}

/// `POST /v1/payments/keysend`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysendRequest {
    /// Recipient node id, hex.
    pub node_id: String,
    /// Amount, msat.
    pub amount_msat: u64,
}

/// A payment was started; its outcome arrives as an event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentStarted {
    /// Payment hash, hex.
    pub payment_hash: String,
}

/// `GET /v1/onchain/balance`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OnchainBalanceView {
    /// Confirmed, sat.
    pub confirmed_sat: u64,
    /// Unconfirmed, sat.
    pub unconfirmed_sat: u64,
    /// Spendable (less the anchor reserve), sat.
    pub spendable_sat: u64,
    /// Kept for anchor-channel fee bumping, sat.
    pub anchor_reserve_sat: u64,
}

/// `POST /v1/onchain/address`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddressView {
    /// A fresh address.
    pub address: String,
}

/// `POST /v1/onchain/send`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendOnchainRequest {
    /// Destination.
    pub address: String,
    /// Amount, sat; omit with `all: true` to send everything spendable.
    pub amount_sat: Option<u64>,
    /// Send everything spendable.
    pub all: Option<bool>,
    /// Fee rate, sat/vB (default: the estimate for ~12 blocks).
    pub fee_rate_sat_per_vb: Option<u64>,
}

/// `POST /v1/onchain/send` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TxView {
    /// Transaction id.
    pub txid: String,
}

/// A webhook endpoint (the secret only when created).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// Id.
    pub id: i64,
    /// URL.
    pub url: String,
    /// Delivered event types (empty: all).
    pub event_types: Vec<String>,
    /// Enabled.
    pub enabled: bool,
    /// Created, Unix ms.
    pub created_at_ms: u64,
    /// The `whsec_` signing secret, returned once at creation.
    pub secret: Option<String>,
}

/// `POST /v1/webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddWebhookRequest {
    /// `https://...` (or `http://` for loopback).
    pub url: String,
    /// Event types (default: all).
    pub event_types: Option<Vec<String>>,
    /// A `whsec_` secret to use (default: generated).
    pub secret: Option<String>,
}

/// A webhook delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// Id.
    pub id: i64,
    /// `webhook-id` header.
    pub webhook_id: String,
    /// Event sequence number.
    pub event_seq: u64,
    /// Event type.
    pub event_type: String,
    /// Endpoint id.
    pub endpoint_id: i64,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// Last HTTP status.
    pub last_status: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
    /// Created, Unix ms.
    pub created_at_ms: u64,
    /// Delivered, Unix ms.
    pub delivered_at_ms: Option<u64>,
}

/// Filter of `GET /v1/webhooks/deliveries`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered` or `dead`.
    pub state: Option<String>,
    /// Only this endpoint.
    pub endpoint_id: Option<i64>,
    /// At most this many (default 50, at most 1000), newest first.
    pub limit: Option<u32>,
}

/// `POST /v1/webhooks/{id}/test` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookTestView {
    /// `webhook-id` sent.
    pub webhook_id: String,
    /// HTTP status received.
    pub status: u16,
    /// Round trip, ms.
    pub elapsed_ms: u64,
}

/// A domain event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Sequence number (the cursor).
    pub seq: u64,
    /// Event type, e.g. `payment_received`.
    pub event_type: String,
    /// The event as webhooks carry it.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Appended, Unix ms.
    pub created_at_ms: u64,
}

/// `GET /v1/events`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventsPage {
    /// Events after the cursor, oldest first.
    pub events: Vec<EventView>,
    /// Pass as `after` to continue.
    pub next_after: u64,
}

/// Cursor of `GET /v1/events` and `GET /v1/events/stream`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events with a greater sequence number (default 0; the stream: only new events).
    pub after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Token for clients that cannot send headers (EventSource).
    pub access_token: Option<String>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Label.
    pub name: String,
    /// `read`, `invoices` or `admin`.
    pub scope: Scope,
}

/// `POST /v1/tokens` answer: the token is shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The bearer token.
    pub token: String,
    /// Its record.
    pub info: TokenInfo,
}

/// An empty success.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ok {
    /// Always true.
    pub ok: bool,
}
