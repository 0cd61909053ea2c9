//! The seam between the merchant domain and a Lightning implementation.
//!
//! Everything under `invoice`, `events`, `webhook`, `rates`, ... talks to a node only through
//! [`LightningBackend`]; the embedded LDK node implements it in [`EmbeddedBackend`], and an
//! LND backend can implement it too. The types here carry no LDK types: hashes are
//! [`Hash32`], node ids and channel ids are hex strings, amounts are integer msat/sat.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bitcoin::hashes::Hash;
use bitcoin::hex::{DisplayHex, FromHex};

use crate::node::Node;
use crate::{Error, Event, PaymentDirection, PaymentHash, PaymentPreimage, PaymentStatus};

/// A 32-byte value (payment hash or preimage), shown and parsed as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// SHA-256 of this value (a preimage's payment hash).
    pub fn sha256(&self) -> Hash32 {
        Hash32(bitcoin::hashes::sha256::Hash::hash(&self.0).to_byte_array())
    }
    /// A random value (for preimages).
    pub fn random() -> Hash32 {
        Hash32(rand::random())
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_hex())
    }
}
impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_hex())
    }
}
impl std::str::FromStr for Hash32 {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, BackendError> {
        <[u8; 32]>::from_hex(s)
            .map(Hash32)
            .map_err(|_| BackendError::Rejected(format!("not a 32-byte hex value: {s}")))
    }
}

/// Why a backend call failed, sorted by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// The backend is unreachable, not running or timed out: retry later.
    Unavailable(String),
    /// The request is invalid (bad invoice, amount, id...): do not retry.
    Rejected(String),
    /// The thing asked for does not exist.
    NotFound(String),
    /// Not enough funds (on-chain or channel capacity).
    InsufficientFunds(String),
    /// Anything else; the message says what.
    Other(String),
}

impl BackendError {
    /// Whether retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Unavailable(_))
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Unavailable(m) => write!(f, "backend unavailable: {m}"),
            BackendError::Rejected(m) => write!(f, "rejected by the backend: {m}"),
            BackendError::NotFound(m) => write!(f, "not found: {m}"),
            BackendError::InsufficientFunds(m) => write!(f, "insufficient funds: {m}"),
            BackendError::Other(m) => write!(f, "backend error: {m}"),
        }
    }
}

impl std::error::Error for BackendError {}

impl From<Error> for BackendError {
    fn from(e: Error) -> Self {
        let m = e.to_string();
        match e {
            Error::NotRunning
            | Error::ChainSource(_)
            | Error::ConnectionFailed(_)
            | Error::PeerNotConnected(_) => BackendError::Unavailable(m),
            Error::InsufficientFunds { .. } => BackendError::InsufficientFunds(m),
            Error::UnknownChannel(_) | Error::UnknownPayment(_) => BackendError::NotFound(m),
            Error::InvalidAddress(_)
            | Error::InvalidNodeId(_)
            | Error::InvalidSocketAddress(_)
            | Error::InvalidAmount(_)
            | Error::InvalidInvoice(_)
            | Error::InvalidInput(_)
            | Error::DuplicatePayment(_)
            | Error::InvalidConfig(_)
            | Error::InvalidMnemonic(_) => BackendError::Rejected(m),
            _ => BackendError::Other(m),
        }
    }
}

/// Basic facts about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node public key, hex.
    pub node_id: String,
    /// Network name (`bitcoin`, `testnet`, `signet`, `regtest`).
    pub network: String,
    /// Listening addresses.
    pub addresses: Vec<String>,
    /// Unix time of the last chain sync, if any.
    pub last_chain_sync_unix: Option<u64>,
}

/// One channel's balances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Channel id, hex.
    pub channel_id: String,
    /// The id to close it by ([`LightningBackend::close_channel`]).
    pub channel_ref: String,
    /// Peer node id, hex.
    pub counterparty: String,
    /// Size in sat.
    pub capacity_sat: u64,
    /// Our balance, msat.
    pub local_msat: u64,
    /// The peer's balance, msat.
    pub remote_msat: u64,
    /// What we can send now, msat.
    pub outbound_msat: u64,
    /// What we can receive now, msat.
    pub inbound_msat: u64,
    /// Usable for payments now.
    pub is_usable: bool,
    /// Announced for forwarding.
    pub is_public: bool,
}

/// On-chain and channel balances.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Balances {
    /// Confirmed on-chain, sat.
    pub onchain_confirmed_sat: u64,
    /// Unconfirmed on-chain, sat.
    pub onchain_unconfirmed_sat: u64,
    /// Spendable on-chain now (less reserves), sat.
    pub onchain_spendable_sat: u64,
    /// Sum of channels' outbound capacity, msat.
    pub lightning_outbound_msat: u64,
    /// Sum of channels' inbound capacity, msat.
    pub lightning_inbound_msat: u64,
}

/// A peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Node id, hex.
    pub node_id: String,
    /// `host:port`, when known.
    pub address: Option<String>,
    /// Connected now.
    pub connected: bool,
}

/// What a new invoice should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRequest {
    /// Amount in msat, or `None` for an open amount.
    pub amount_msat: Option<u64>,
    /// Description shown to the payer.
    pub description: String,
    /// Seconds until it expires.
    pub expiry_secs: u32,
    /// For a hold invoice: the payment hash whose preimage the caller keeps. The HTLC is held
    /// ([`BackendEvent::InvoiceAccepted`]) until [`LightningBackend::settle_invoice`] or
    /// [`LightningBackend::cancel_invoice`].
    pub payment_hash: Option<Hash32>,
}

/// An invoice the backend created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedInvoice {
    /// The BOLT11 string.
    pub bolt11: String,
    /// Its payment hash.
    pub payment_hash: Hash32,
}

/// Where an invoice stands on the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceState {
    /// Not paid yet.
    Open,
    /// Paid and settled.
    Settled,
    /// Cancelled (or failed back).
    Cancelled,
}

/// An invoice as the backend knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInvoice {
    /// Payment hash.
    pub payment_hash: Hash32,
    /// State.
    pub state: InvoiceState,
    /// Amount requested or, once settled, received, in msat.
    pub amount_msat: Option<u64>,
    /// The BOLT11 string, when known.
    pub bolt11: Option<String>,
}

/// Something that happened on the backend, delivered at least once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendEvent {
    /// A hold invoice's HTLC arrived and is held.
    InvoiceAccepted {
        /// Payment hash.
        payment_hash: Hash32,
        /// Amount held, msat.
        amount_msat: u64,
    },
    /// A hold invoice's held payment reached its claim deadline and the backend failed it
    /// back; the invoice can no longer be settled.
    HeldPaymentTimedOut {
        /// Payment hash.
        payment_hash: Hash32,
    },
    /// An invoice was paid and settled.
    InvoiceSettled {
        /// Payment hash.
        payment_hash: Hash32,
        /// Amount received, msat.
        amount_msat: u64,
    },
    /// An outgoing payment succeeded.
    PaymentSucceeded {
        /// Payment hash.
        payment_hash: Hash32,
        /// Proof of payment.
        preimage: Hash32,
        /// Routing fee, msat.
        fee_msat: u64,
        /// What the recipient got, msat (fees excluded), when known.
        amount_msat: Option<u64>,
    },
    /// An outgoing payment failed.
    PaymentFailed {
        /// Payment hash, when known.
        payment_hash: Option<Hash32>,
        /// Why.
        reason: String,
    },
    /// A channel became usable.
    ChannelOpened {
        /// Channel id, hex.
        channel_id: String,
        /// Peer node id, hex.
        counterparty: String,
    },
    /// A channel closed.
    ChannelClosed {
        /// Channel id, hex.
        channel_id: String,
        /// Peer node id, hex, when known.
        counterparty: Option<String>,
        /// Why.
        reason: String,
    },
    /// Anything else the domain does not act on (on-chain receipts, forwards, ...).
    Other(String),
}

/// What the merchant domain needs from a Lightning node. Object-safe: use it as
/// `Arc<dyn LightningBackend>`.
#[async_trait]
pub trait LightningBackend: Send + Sync {
    /// Node id, network, addresses, sync state.
    async fn node_info(&self) -> Result<NodeInfo, BackendError>;
    /// On-chain and channel balances.
    async fn balances(&self) -> Result<Balances, BackendError>;
    /// Channels with their balances.
    async fn list_channels(&self) -> Result<Vec<ChannelInfo>, BackendError>;
    /// Known peers.
    async fn list_peers(&self) -> Result<Vec<PeerInfo>, BackendError>;
    /// Connects (and keeps reconnecting) to a peer.
    async fn connect_peer(&self, node_id: &str, address: &str) -> Result<(), BackendError>;
    /// Opens a channel; returns its `channel_ref`.
    async fn open_channel(
        &self,
        node_id: &str,
        address: &str,
        amount_sat: u64,
        push_msat: u64,
        public: bool,
    ) -> Result<String, BackendError>;
    /// Closes a channel by `channel_ref`, cooperatively unless `force`.
    async fn close_channel(&self, channel_ref: &str, force: bool) -> Result<(), BackendError>;
    /// Creates an invoice (a hold invoice when `payment_hash` is set).
    async fn create_invoice(&self, req: InvoiceRequest) -> Result<CreatedInvoice, BackendError>;
    /// Settles a held invoice with its preimage.
    async fn settle_invoice(&self, preimage: Hash32) -> Result<(), BackendError>;
    /// Cancels an invoice: a held HTLC is failed back and later payments are refused.
    async fn cancel_invoice(&self, payment_hash: Hash32) -> Result<(), BackendError>;
    /// Looks an invoice up by payment hash.
    async fn lookup_invoice(
        &self,
        payment_hash: Hash32,
    ) -> Result<Option<BackendInvoice>, BackendError>;
    /// Starts paying a BOLT11 invoice; the outcome arrives as an event.
    async fn pay_invoice(
        &self,
        bolt11: &str,
        amount_msat: Option<u64>,
        max_fee_msat: Option<u64>,
    ) -> Result<Hash32, BackendError>;
    /// Starts a keysend payment; the outcome arrives as an event.
    async fn keysend(&self, node_id: &str, amount_msat: u64) -> Result<Hash32, BackendError>;
    /// A fresh on-chain address.
    async fn new_address(&self) -> Result<String, BackendError>;
    /// Sends on-chain (`None`: everything spendable); returns the txid.
    async fn send_onchain(
        &self,
        address: &str,
        amount_sat: Option<u64>,
        sat_per_vb: Option<u64>,
    ) -> Result<String, BackendError>;
    /// The fee rate for confirmation within `target_blocks`, sat/vB (rounded up).
    async fn fee_estimate_sat_per_vb(&self, target_blocks: u16) -> Result<u64, BackendError>;
    /// Waits for the next event. The same event is returned until [`Self::event_handled`].
    async fn next_event(&self) -> Result<BackendEvent, BackendError>;
    /// Acknowledges the event [`Self::next_event`] returned.
    async fn event_handled(&self) -> Result<(), BackendError>;
}

/// [`LightningBackend`] over the embedded LDK [`Node`].
#[derive(Clone)]
pub struct EmbeddedBackend {
    node: Arc<Node>,
}

impl EmbeddedBackend {
    /// Wraps a node (started or not; calls fail with [`BackendError::Unavailable`] while it is
    /// stopped).
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The wrapped node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Runs a blocking node call off the async worker threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Node) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, BackendError> {
        let node = Arc::clone(&self.node);
        tokio::task::spawn_blocking(move || f(&node))
            .await
            .map_err(|e| BackendError::Other(format!("task failed: {e}")))?
            .map_err(BackendError::from)
    }
}

fn channel_info(c: crate::ChannelDetails) -> ChannelInfo {
    ChannelInfo {
        channel_id: c.channel_id.to_string(),
        channel_ref: c.user_channel_id.to_string(),
        counterparty: c.counterparty_node_id.to_string(),
        capacity_sat: c.capacity_sat,
        local_msat: c.local_balance_msat,
        remote_msat: c.remote_balance_msat,
        outbound_msat: c.outbound_capacity_msat,
        inbound_msat: c.inbound_capacity_msat,
        is_usable: c.is_usable,
        is_public: c.is_announced,
    }
}

fn to_backend_event(e: Event) -> BackendEvent {
    match e {
        Event::PaymentClaimable {
            payment_hash,
            amount_msat,
            ..
        } => BackendEvent::InvoiceAccepted {
            payment_hash: Hash32(payment_hash.0),
            amount_msat,
        },
        Event::HeldPaymentTimedOut { payment_hash, .. } => BackendEvent::HeldPaymentTimedOut {
            payment_hash: Hash32(payment_hash.0),
        },
        Event::PaymentReceived {
            payment_hash,
            amount_msat,
        } => BackendEvent::InvoiceSettled {
            payment_hash: Hash32(payment_hash.0),
            amount_msat,
        },
        Event::PaymentSuccessful {
            payment_hash,
            payment_preimage,
            fee_paid_msat,
            amount_msat,
        } => BackendEvent::PaymentSucceeded {
            payment_hash: Hash32(payment_hash.0),
            preimage: Hash32(payment_preimage.0),
            fee_msat: fee_paid_msat.unwrap_or(0),
            amount_msat,
        },
        Event::PaymentFailed {
            payment_hash,
            reason,
        } => BackendEvent::PaymentFailed {
            payment_hash: payment_hash.map(|h| Hash32(h.0)),
            reason,
        },
        Event::ChannelReady {
            channel_id,
            counterparty_node_id,
            ..
        } => BackendEvent::ChannelOpened {
            channel_id: channel_id.to_string(),
            counterparty: counterparty_node_id.to_string(),
        },
        Event::ChannelClosed {
            channel_id,
            counterparty_node_id,
            reason,
            ..
        } => BackendEvent::ChannelClosed {
            channel_id: channel_id.to_string(),
            counterparty: counterparty_node_id.map(|n| n.to_string()),
            reason,
        },
        other => BackendEvent::Other(format!("{other:?}")),
    }
}

#[async_trait]
impl LightningBackend for EmbeddedBackend {
    async fn node_info(&self) -> Result<NodeInfo, BackendError> {
        if !self.node.is_running() {
            return Err(BackendError::Unavailable("node is not running".into()));
        }
        Ok(NodeInfo {
            node_id: self.node.node_id().to_string(),
            network: self.node.network().to_string(),
            addresses: self
                .node
                .listening_addresses()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            last_chain_sync_unix: self.node.last_sync_unix(),
        })
    }

    async fn balances(&self) -> Result<Balances, BackendError> {
        let onchain = self.node.onchain_balance();
        let channels = self.node.list_channels();
        Ok(Balances {
            onchain_confirmed_sat: onchain.confirmed_sat,
            onchain_unconfirmed_sat: onchain.unconfirmed_sat,
            onchain_spendable_sat: onchain.spendable_sat,
            lightning_outbound_msat: channels.iter().map(|c| c.outbound_capacity_msat).sum(),
            lightning_inbound_msat: channels.iter().map(|c| c.inbound_capacity_msat).sum(),
        })
    }

    async fn list_channels(&self) -> Result<Vec<ChannelInfo>, BackendError> {
        Ok(self
            .node
            .list_channels()
            .into_iter()
            .map(channel_info)
            .collect())
    }

    async fn list_peers(&self) -> Result<Vec<PeerInfo>, BackendError> {
        Ok(self
            .node
            .list_peers()
            .into_iter()
            .map(|p| PeerInfo {
                node_id: p.node_id.to_string(),
                address: p.address.map(|a| a.to_string()),
                connected: p.is_connected,
            })
            .collect())
    }

    async fn connect_peer(&self, node_id: &str, address: &str) -> Result<(), BackendError> {
        let (n, a) = (node_id.to_string(), address.to_string());
        self.blocking(move |node| node.connect_peer(&n, &a, true))
            .await
    }

    async fn open_channel(
        &self,
        node_id: &str,
        address: &str,
        amount_sat: u64,
        push_msat: u64,
        public: bool,
    ) -> Result<String, BackendError> {
        let (n, a) = (node_id.to_string(), address.to_string());
        self.blocking(move |node| node.open_channel(&n, &a, amount_sat, push_msat, public))
            .await
            .map(|id| id.to_string())
    }

    async fn close_channel(&self, channel_ref: &str, force: bool) -> Result<(), BackendError> {
        let id: u128 = channel_ref
            .parse()
            .map_err(|_| BackendError::Rejected(format!("bad channel reference {channel_ref}")))?;
        if force {
            self.node
                .force_close_channel(id, "closed by the merchant")
                .map_err(Into::into)
        } else {
            self.node.close_channel(id).map_err(Into::into)
        }
    }

    async fn create_invoice(&self, req: InvoiceRequest) -> Result<CreatedInvoice, BackendError> {
        let invoice = match req.payment_hash {
            Some(h) => self.node.create_hold_invoice(
                PaymentHash(h.0),
                req.amount_msat,
                &req.description,
                req.expiry_secs,
            )?,
            None => self
                .node
                .create_invoice(req.amount_msat, &req.description, req.expiry_secs)?,
        };
        Ok(CreatedInvoice {
            payment_hash: Hash32(invoice.payment_hash().to_byte_array()),
            bolt11: invoice.to_string(),
        })
    }

    async fn settle_invoice(&self, preimage: Hash32) -> Result<(), BackendError> {
        self.node
            .claim_payment(PaymentPreimage(preimage.0))
            .map_err(Into::into)
    }

    async fn cancel_invoice(&self, payment_hash: Hash32) -> Result<(), BackendError> {
        self.node
            .fail_payment(PaymentHash(payment_hash.0))
            .map_err(Into::into)
    }

    async fn lookup_invoice(
        &self,
        payment_hash: Hash32,
    ) -> Result<Option<BackendInvoice>, BackendError> {
        let p = self.node.inbound_payment(&PaymentHash(payment_hash.0))?;
        Ok(p.filter(|p| p.direction == PaymentDirection::Inbound)
            .map(|p| BackendInvoice {
                payment_hash,
                state: match p.status {
                    PaymentStatus::Pending => InvoiceState::Open,
                    PaymentStatus::Succeeded => InvoiceState::Settled,
                    PaymentStatus::Failed => InvoiceState::Cancelled,
                },
                amount_msat: p.amount_msat,
                bolt11: p.invoice,
            }))
    }

    async fn pay_invoice(
        &self,
        bolt11: &str,
        amount_msat: Option<u64>,
        max_fee_msat: Option<u64>,
    ) -> Result<Hash32, BackendError> {
        Ok(Hash32(
            self.node.pay_invoice(bolt11, amount_msat, max_fee_msat)?.0,
        ))
    }

    async fn keysend(&self, node_id: &str, amount_msat: u64) -> Result<Hash32, BackendError> {
        Ok(Hash32(self.node.keysend(node_id, amount_msat)?.0))
    }

    async fn new_address(&self) -> Result<String, BackendError> {
        Ok(self.node.new_onchain_address()?.to_string())
    }

    async fn send_onchain(
        &self,
        address: &str,
        amount_sat: Option<u64>,
        sat_per_vb: Option<u64>,
    ) -> Result<String, BackendError> {
        let fee_rate = match sat_per_vb {
            Some(r) => Some(crate::FeeRate::from_sat_per_vb(r).ok_or_else(|| {
                BackendError::Rejected(format!("fee rate {r} sat/vB is too high"))
            })?),
            None => None,
        };
        let a = address.to_string();
        self.blocking(move |node| node.send_onchain(&a, amount_sat, fee_rate))
            .await
            .map(|t| t.to_string())
    }

    async fn fee_estimate_sat_per_vb(&self, target_blocks: u16) -> Result<u64, BackendError> {
        Ok(self
            .node
            .fee_rate_for_blocks(target_blocks)
            .to_sat_per_vb_ceil())
    }

    async fn next_event(&self) -> Result<BackendEvent, BackendError> {
        Ok(to_backend_event(self.node.next_event_async().await))
    }

    async fn event_handled(&self) -> Result<(), BackendError> {
        self.node.event_handled().map_err(Into::into)
    }
}
