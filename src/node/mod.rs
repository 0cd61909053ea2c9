//! The embedded Lightning node: LDK for channels and payments, BDK for on-chain funds, one
//! SQLite database for both.

pub(crate) mod background;
pub mod builder;
pub mod chain;
#[cfg(test)]
mod esplora_tests;
pub mod events;
mod handler;
pub mod payments;
pub mod store;
mod triage;
pub(crate) mod types;
pub mod wallet;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::hex::DisplayHex;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{FeeRate, OutPoint, Txid};
use lightning::chain::chaininterface::ConfirmationTarget;
use lightning::ln::channelmanager::{
    Bolt11InvoiceParameters, PaymentId, RecipientOnionFields, Retry,
};

use lightning::ln::types::ChannelId;
use lightning::routing::router::{PaymentParameters, RouteParameters, RouteParametersConfig};
use lightning::util::persist::KVStoreSync;
use lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use lightning_types::payment::{PaymentHash, PaymentPreimage};
use tokio::sync::watch;

use self::chain::{Broadcaster, ChainSource, Fees, Listeners};
use self::events::{Event, EventQueue};
use self::handler::EventHandler;
use self::payments::{
    now_ms, PaymentDetails, PaymentDirection, PaymentKind, PaymentStatus, PaymentStore,
};
use self::store::SqliteStore;
use self::types::{ChainMonitor, ChannelManager, Graph, PeerManager, Scorer, Sweeper};
use self::wallet::{OnchainBalance, Wallet};
use crate::config::Config;
use crate::Error;

const PEERS_NAMESPACE: &str = "lightkeeper_peers";

/// A channel as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelDetails {
    /// The channel id.
    pub channel_id: ChannelId,
    /// Our id for the channel (given at open, random for inbound channels).
    pub user_channel_id: u128,
    /// The peer.
    pub counterparty_node_id: PublicKey,
    /// The funding output, once known.
    pub funding_txo: Option<OutPoint>,
    /// Channel size in sat.
    pub capacity_sat: u64,
    /// Our balance in msat (what we could send plus the reserve we must keep).
    pub local_balance_msat: u64,
    /// The peer's balance in msat, estimated the same way.
    pub remote_balance_msat: u64,
    /// What we can send now, in msat.
    pub outbound_capacity_msat: u64,
    /// What we can receive now, in msat.
    pub inbound_capacity_msat: u64,
    /// Funding confirmed and both sides sent `channel_ready`.
    pub is_channel_ready: bool,
    /// Ready and the peer is connected: payments can use it now.
    pub is_usable: bool,
    /// Announced to the network for forwarding.
    pub is_announced: bool,
    /// Whether we opened it.
    pub is_outbound: bool,
    /// Confirmations of the funding transaction.
    pub confirmations: Option<u32>,
    /// HTLCs in flight on the channel, both directions. The balances above settle only once
    /// this is 0: a payment's sender may already have its success while the commitment
    /// update that moves the funds is still under way.
    pub pending_htlcs: usize,
}

/// A peer the node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDetails {
    /// The peer's node id.
    pub node_id: PublicKey,
    /// Its address, when we know one.
    pub address: Option<SocketAddr>,
    /// Whether we reconnect to it automatically.
    pub is_persisted: bool,
    /// Whether it is connected now.
    pub is_connected: bool,
}

/// Everything the node is made of; shared by the public handle and the background tasks.
pub(crate) struct Inner {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<SqliteStore>,
    pub(crate) wallet: Arc<Wallet>,
    pub(crate) chain: Arc<ChainSource>,
    pub(crate) fees: Arc<Fees>,
    pub(crate) chain_monitor: Arc<ChainMonitor>,
    pub(crate) channel_manager: Arc<ChannelManager>,
    pub(crate) peer_manager: Arc<PeerManager>,
    pub(crate) triage: Arc<triage::HtlcTriage>,
    pub(crate) graph: Arc<Graph>,
    pub(crate) scorer: Arc<Mutex<Scorer>>,
    pub(crate) sweeper: Arc<Sweeper>,
    pub(crate) events: Arc<EventQueue>,
    pub(crate) payments: Arc<PaymentStore>,
    pub(crate) handler: EventHandler,
    pub(crate) broadcast_rx:
        Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Vec<bitcoin::Transaction>>>>,
    pub(crate) _broadcaster: Arc<Broadcaster>,
    pub(crate) persister: Arc<crate::tower::persist::ReplicatedPersister>,
}

impl Inner {
    fn listeners(&self) -> Listeners {
        Listeners {
            wallet: Arc::clone(&self.wallet),
            channel_manager: Arc::clone(&self.channel_manager),
            chain_monitor: Arc::clone(&self.chain_monitor),
            sweeper: Arc::clone(&self.sweeper),
        }
    }

    pub(crate) async fn sync(&self) -> Result<(), Error> {
        self.chain.sync(&self.listeners()).await?;
        let _ = self
            .sweeper
            .regenerate_and_broadcast_spend_if_necessary()
            .await;
        Ok(())
    }

    pub(crate) fn stored_peers(&self) -> Vec<(PublicKey, SocketAddr)> {
        let keys = KVStoreSync::list(&*self.store, PEERS_NAMESPACE, "").unwrap_or_default();
        keys.into_iter()
            .filter_map(|k| {
                let id: PublicKey = k.parse().ok()?;
                let v = KVStoreSync::read(&*self.store, PEERS_NAMESPACE, "", &k).ok()?;
                let addr: SocketAddr = String::from_utf8(v).ok()?.parse().ok()?;
                Some((id, addr))
            })
            .collect()
    }

    pub(crate) async fn connect(&self, node_id: PublicKey, addr: SocketAddr) -> Result<(), Error> {
        if self.peer_manager.peer_by_node_id(&node_id).is_some() {
            return Ok(());
        }
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|_| Error::ConnectionFailed(format!("{node_id}@{addr}: timed out")))?
        .map_err(|e| Error::ConnectionFailed(format!("{node_id}@{addr}: {e}")))?;
        // Lightning sends several small messages per round trip (update_add_htlc then
        // commitment_signed): without TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms.
        stream.set_nodelay(true)?;
        let std_stream = stream.into_std()?;
        let fut = lightning_net_tokio::setup_outbound(
            Arc::clone(&self.peer_manager),
            node_id,
            std_stream,
        );
        let mut conn = Box::pin(fut);
        // Wait until the handshake completes or the connection closes.
        for _ in 0..200 {
            if self.peer_manager.peer_by_node_id(&node_id).is_some() {
                tokio::spawn(conn);
                return Ok(());
            }
            tokio::select! {
                _ = &mut conn => {
                    return Err(Error::ConnectionFailed(format!("{node_id}@{addr}: connection closed during handshake")));
                },
                _ = tokio::time::sleep(Duration::from_millis(10)) => {},
            }
        }
        Err(Error::ConnectionFailed(format!(
            "{node_id}@{addr}: handshake timed out"
        )))
    }

    fn anchor_reserve_sat(&self) -> u64 {
        self.channel_manager.list_channels().len() as u64
            * self.config.anchor_reserve_per_channel_sat
    }
}

struct Running {
    runtime: tokio::runtime::Runtime,
    /// Stops the listener, reconnection, chain sync and broadcaster.
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Stops the event processor, which then writes the final channel manager.
    stop_processor: watch::Sender<bool>,
    processor: tokio::task::JoinHandle<()>,
    listening: Vec<SocketAddr>,
}

/// A running (or stopped) Lightning node. Build one with [`crate::Builder`].
///
/// Methods are synchronous unless named `_async`; they must not be called from inside an
/// async runtime's worker thread (use the `_async` variants there).
pub struct Node {
    inner: Arc<Inner>,
    running: Mutex<Option<Running>>,
}

fn parse_node_id(s: &str) -> Result<PublicKey, Error> {
    s.parse().map_err(|_| Error::InvalidNodeId(s.to_string()))
}

impl Node {
    pub(crate) fn new(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
            running: Mutex::new(None),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&self) -> Result<tokio::runtime::Handle, Error> {
        self.running()
            .as_ref()
            .map(|r| r.runtime.handle().clone())
            .ok_or(Error::NotRunning)
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> Result<F::Output, Error> {
        Ok(self.handle()?.block_on(f))
    }

    /// Starts the node: syncs to the chain tip, listens, and runs the background tasks.
    /// Calling it on a running node does nothing.
    ///
    /// # Errors
    /// [`Error::ChainSource`] if the initial sync fails, [`Error::Storage`] if a listening
    /// address cannot be bound.
    pub fn start(&self) -> Result<(), Error> {
        let mut running = self.running();
        if running.is_some() {
            return Ok(());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lightkeeper")
            .enable_all()
            .build()?;
        let inner = Arc::clone(&self.inner);
        let (stop, stop_rx) = watch::channel(false);
        let (stop_processor, stop_processor_rx) = watch::channel(false);
        let (tasks, processor, listening) = runtime.block_on(async {
            let _ = inner.chain.update_fees().await;
            inner.sync().await?;
            let mut tasks = Vec::new();
            let mut listening = Vec::new();
            for addr in &inner.config.listening_addresses {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Storage(format!("cannot listen on {addr}: {e}")))?;
                listening.push(l.local_addr()?);
                tasks.push(tokio::spawn(background::listen(Arc::clone(&inner), l, stop_rx.clone())));
            }
            let rx = Arc::clone(&inner.broadcast_rx);
            let chain = Arc::clone(&inner.chain);
            let wallet = Arc::clone(&inner.wallet);
            let mut stop_b = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut rx = rx.lock().await;
                loop {
                    tokio::select! {
                        txs = rx.recv() => match txs {
                            Some(txs) => for tx in txs {
                                match chain.broadcast(&tx).await {
                                    Ok(txid) => { log::info!("broadcast {txid}"); wallet.record_unconfirmed(&tx); },
                                    Err(e) => log::warn!("{e}"),
                                }
                            },
                            None => break,
                        },
                        _ = stop_b.changed() => break,
                    }
                }
            }));
            let processor =
                tokio::spawn(background::process_events(Arc::clone(&inner), stop_processor_rx));
            tasks.push(tokio::spawn(background::sync_chain(Arc::clone(&inner), stop_rx.clone())));
            tasks.push(tokio::spawn(background::reconnect_peers(Arc::clone(&inner), stop_rx.clone())));
            Ok::<_, Error>((tasks, processor, listening))
        })?;
        log::info!(
            "node {} started, listening on {listening:?}",
            self.node_id()
        );
        *running = Some(Running {
            runtime,
            stop,
            tasks,
            stop_processor,
            processor,
            listening,
        });
        Ok(())
    }

    /// Stops the background tasks, disconnects peers and writes the final state. Calling it on
    /// a stopped node does nothing.
    pub fn stop(&self) -> Result<(), Error> {
        let Some(r) = self.running().take() else {
            return Ok(());
        };
        shutdown(&self.inner, r);
        log::info!("node {} stopped", self.node_id());
        Ok(())
    }

    /// Whether the node is running.
    pub fn is_running(&self) -> bool {
        self.running().is_some()
    }

    /// The node's public key.
    pub fn node_id(&self) -> PublicKey {
        self.inner.channel_manager.get_our_node_id()
    }

    /// The addresses the node listens on (with the actual ports), empty when stopped.
    pub fn listening_addresses(&self) -> Vec<SocketAddr> {
        self.running()
            .as_ref()
            .map(|r| r.listening.clone())
            .unwrap_or_default()
    }

    /// Whether this node saw an HTLC to forward in the last few seconds, and so batches HTLC
    /// processing behind a random delay; HTLCs for its own invoices are otherwise processed at
    /// once. For diagnostics and tests.
    pub fn forwarding_batch_active(&self) -> bool {
        self.inner.triage.forwards_pending()
    }

    /// The Bitcoin network the node runs on.
    pub fn network(&self) -> bitcoin::Network {
        self.inner.config.network
    }

    /// The node's current fee estimate for confirmation within about `target_blocks` blocks.
    pub fn fee_rate_for_blocks(&self, target_blocks: u16) -> FeeRate {
        let target = match target_blocks {
            0..=1 => ConfirmationTarget::MaximumFeeEstimate,
            2..=6 => ConfirmationTarget::UrgentOnChainSweep,
            7..=12 => ConfirmationTarget::OutputSpendingFee,
            13..=144 => ConfirmationTarget::ChannelCloseMinimum,
            _ => ConfirmationTarget::AnchorChannelFee,
        };
        self.inner.fees.fee_rate(target)
    }

    /// The path of the node's database.
    pub fn database_path(&self) -> &std::path::Path {
        self.inner.store.path()
    }

    // ---- chain and on-chain wallet ------------------------------------------------------

    /// Syncs the chain listeners and the wallet to the chain tip now.
    ///
    /// # Errors
    /// [`Error::NotRunning`], or [`Error::ChainSource`] if the chain source fails.
    pub fn sync_wallets(&self) -> Result<(), Error> {
        let inner = Arc::clone(&self.inner);
        self.block_on(async move { inner.sync().await })?
    }

    /// Async variant of [`Node::sync_wallets`].
    pub async fn sync_wallets_async(&self) -> Result<(), Error> {
        let inner = Arc::clone(&self.inner);
        self.handle()?
            .spawn(async move { inner.sync().await })
            .await
            .map_err(|e| Error::ChainSource(e.to_string()))?
    }

    /// Unix time of the last successful chain sync.
    pub fn last_sync_unix(&self) -> Option<u64> {
        self.inner.chain.last_sync_unix()
    }

    /// A fresh address of the on-chain wallet.
    ///
    /// # Errors
    /// [`Error::Storage`] if the wallet cannot persist the revealed address.
    pub fn new_onchain_address(&self) -> Result<bitcoin::Address, Error> {
        self.inner.wallet.new_address()
    }

    /// On-chain balances; `spendable_sat` excludes the anchor-channel reserve.
    pub fn onchain_balance(&self) -> OnchainBalance {
        self.inner.wallet.balance(self.inner.anchor_reserve_sat())
    }

    /// Sends `amount_sat` (or, with `None`, everything spendable above the anchor reserve) to
    /// `address` at `fee_rate` (default: the chain source's estimate for ~12 blocks), and
    /// broadcasts the transaction.
    ///
    /// # Errors
    /// [`Error::InvalidAddress`], [`Error::InvalidAmount`] (zero or dust),
    /// [`Error::InsufficientFunds`], [`Error::ChainSource`] if the broadcast is refused.
    pub fn send_onchain(
        &self,
        address: &str,
        amount_sat: Option<u64>,
        fee_rate: Option<FeeRate>,
    ) -> Result<Txid, Error> {
        let addr = self.inner.wallet.parse_address(address)?;
        let fee_rate = fee_rate.unwrap_or_else(|| {
            self.inner
                .fees
                .fee_rate(ConfirmationTarget::OutputSpendingFee)
        });
        let tx = self.inner.wallet.build_send(
            addr.script_pubkey(),
            amount_sat,
            fee_rate,
            self.inner.anchor_reserve_sat(),
        )?;
        let chain = Arc::clone(&self.inner.chain);
        let res = self.block_on(async move { chain.broadcast(&tx).await.map(|t| (t, tx)) })?;
        match res {
            Ok((txid, _)) => Ok(txid),
            Err(e) => Err(e),
        }
    }

    // ---- peers ------------------------------------------------------------------------------

    /// Connects to a peer at `address` (`host:port`); with `persist`, the node reconnects to it
    /// after restarts and disconnections.
    ///
    /// # Errors
    /// [`Error::InvalidNodeId`], [`Error::InvalidSocketAddress`], [`Error::ConnectionFailed`].
    pub fn connect_peer(&self, node_id: &str, address: &str, persist: bool) -> Result<(), Error> {
        let node_id = parse_node_id(node_id)?;
        let addr: SocketAddr = address
            .parse()
            .map_err(|_| Error::InvalidSocketAddress(address.to_string()))?;
        let inner = Arc::clone(&self.inner);
        self.block_on(async move { inner.connect(node_id, addr).await })??;
        if persist {
            KVStoreSync::write(
                &*self.inner.store,
                PEERS_NAMESPACE,
                "",
                &node_id.to_string(),
                addr.to_string().into_bytes(),
            )?;
        }
        Ok(())
    }

    /// Disconnects a peer and stops reconnecting to it.
    ///
    /// # Errors
    /// [`Error::InvalidNodeId`], [`Error::Storage`].
    pub fn disconnect_peer(&self, node_id: &str) -> Result<(), Error> {
        let node_id = parse_node_id(node_id)?;
        KVStoreSync::remove(
            &*self.inner.store,
            PEERS_NAMESPACE,
            "",
            &node_id.to_string(),
            false,
        )?;
        self.inner.peer_manager.disconnect_by_node_id(node_id);
        Ok(())
    }

    /// Connected and persisted peers.
    pub fn list_peers(&self) -> Vec<PeerDetails> {
        let stored = self.inner.stored_peers();
        let connected = self.inner.peer_manager.list_peers();
        let mut out: Vec<PeerDetails> = stored
            .iter()
            .map(|(id, addr)| PeerDetails {
                node_id: *id,
                address: Some(*addr),
                is_persisted: true,
                is_connected: connected.iter().any(|p| p.counterparty_node_id == *id),
            })
            .collect();
        for p in connected {
            if !stored.iter().any(|(id, _)| *id == p.counterparty_node_id) {
                let address = p.socket_address.and_then(|a| match a {
                    lightning::ln::msgs::SocketAddress::TcpIpV4 { addr, port } => {
                        Some(SocketAddr::from((addr, port)))
                    }
                    lightning::ln::msgs::SocketAddress::TcpIpV6 { addr, port } => {
                        Some(SocketAddr::from((addr, port)))
                    }
                    _ => None,
                });
                out.push(PeerDetails {
                    node_id: p.counterparty_node_id,
                    address,
                    is_persisted: false,
                    is_connected: true,
                });
            }
        }
        out
    }

    // ---- channels -----------------------------------------------------------------------------

    /// Connects to `node_id` at `address` (persisted) and opens a channel of `amount_sat`,
    /// pushing `push_msat` to the peer; `announce` makes it a public, forwarding channel.
    /// Returns the `user_channel_id` that later events carry.
    ///
    /// # Errors
    /// [`Error::InvalidAmount`], [`Error::InsufficientFunds`] (including the anchor reserve),
    /// [`Error::ConnectionFailed`], [`Error::ChannelOperation`].
    pub fn open_channel(
        &self,
        node_id: &str,
        address: &str,
        amount_sat: u64,
        push_msat: u64,
        announce: bool,
    ) -> Result<u128, Error> {
        if amount_sat < 1_000 {
            return Err(Error::InvalidAmount(format!(
                "channel of {amount_sat} sat is below 1000 sat"
            )));
        }
        if push_msat > amount_sat * 1000 {
            return Err(Error::InvalidAmount(
                "push amount exceeds the channel size".into(),
            ));
        }
        let node_id_pk = parse_node_id(node_id)?;
        let reserve =
            self.inner.anchor_reserve_sat() + self.inner.config.anchor_reserve_per_channel_sat;
        self.inner.wallet.check_can_fund(
            amount_sat,
            reserve,
            self.inner
                .fees
                .fee_rate(ConfirmationTarget::NonAnchorChannelFee),
        )?;
        self.connect_peer(node_id, address, true)?;
        let mut config = self.inner.config.user_config.clone();
        config.channel_handshake_config.announce_for_forwarding = announce;
        let user_channel_id: u128 = rand::random();
        self.inner
            .channel_manager
            .create_channel(
                node_id_pk,
                amount_sat,
                push_msat,
                user_channel_id,
                None,
                Some(config),
            )
            .map_err(|e| Error::ChannelOperation(format!("{e:?}")))?;
        Ok(user_channel_id)
    }

    fn find_channel(
        &self,
        user_channel_id: u128,
    ) -> Result<lightning::ln::channel_state::ChannelDetails, Error> {
        self.inner
            .channel_manager
            .list_channels()
            .into_iter()
            .find(|c| c.user_channel_id == user_channel_id)
            .ok_or_else(|| Error::UnknownChannel(format!("user_channel_id {user_channel_id}")))
    }

    /// Closes a channel cooperatively; its funds return to the wallet once the closing
    /// transaction confirms.
    ///
    /// # Errors
    /// [`Error::UnknownChannel`], [`Error::ChannelOperation`] (e.g. the peer is offline).
    pub fn close_channel(&self, user_channel_id: u128) -> Result<(), Error> {
        let c = self.find_channel(user_channel_id)?;
        self.inner
            .channel_manager
            .close_channel(&c.channel_id, &c.counterparty.node_id)
            .map_err(|e| Error::ChannelOperation(format!("{e:?}")))
    }

    /// Force-closes a channel by broadcasting our latest commitment; our funds come back after
    /// the CSV delay and are swept to the wallet.
    ///
    /// # Errors
    /// [`Error::UnknownChannel`], [`Error::ChannelOperation`].
    pub fn force_close_channel(&self, user_channel_id: u128, reason: &str) -> Result<(), Error> {
        let c = self.find_channel(user_channel_id)?;
        self.inner
            .channel_manager
            .force_close_broadcasting_latest_txn(
                &c.channel_id,
                &c.counterparty.node_id,
                reason.to_string(),
            )
            .map_err(|e| Error::ChannelOperation(format!("{e:?}")))
    }

    /// The node's channels.
    pub fn list_channels(&self) -> Vec<ChannelDetails> {
        self.inner
            .channel_manager
            .list_channels()
            .into_iter()
            .map(|c| {
                let our_reserve = c.unspendable_punishment_reserve.unwrap_or(0) * 1000;
                let their_reserve = c.counterparty.unspendable_punishment_reserve * 1000;
                ChannelDetails {
                    channel_id: c.channel_id,
                    user_channel_id: c.user_channel_id,
                    counterparty_node_id: c.counterparty.node_id,
                    funding_txo: c.funding_txo.map(|o| o.into_bitcoin_outpoint()),
                    capacity_sat: c.channel_value_satoshis,
                    local_balance_msat: c.outbound_capacity_msat + our_reserve,
                    remote_balance_msat: c.inbound_capacity_msat + their_reserve,
                    outbound_capacity_msat: c.outbound_capacity_msat,
                    inbound_capacity_msat: c.inbound_capacity_msat,
                    is_channel_ready: c.is_channel_ready,
                    is_usable: c.is_usable,
                    is_announced: c.is_announced,
                    is_outbound: c.is_outbound,
                    confirmations: c.confirmations,
                    pending_htlcs: c.pending_inbound_htlcs.len() + c.pending_outbound_htlcs.len(),
                }
            })
            .collect()
    }

    // ---- payments ----------------------------------------------------------------------------

    /// Creates a BOLT11 invoice for `amount_msat` (or any amount with `None`) that expires
    /// after `expiry_secs`.
    ///
    /// # Errors
    /// [`Error::InvalidAmount`] for a zero amount, [`Error::InvoiceCreation`].
    pub fn create_invoice(
        &self,
        amount_msat: Option<u64>,
        description: &str,
        expiry_secs: u32,
    ) -> Result<Bolt11Invoice, Error> {
        self.create_invoice_inner(amount_msat, description, expiry_secs, None)
    }

    /// Creates a hold invoice for a payment hash whose preimage only the caller knows. When it
    /// is paid the node emits [`Event::PaymentClaimable`] and holds the HTLC until
    /// [`Node::claim_payment`] or [`Node::fail_payment`].
    ///
    /// # Errors
    /// As [`Node::create_invoice`]; [`Error::DuplicatePayment`] if the hash is known.
    pub fn create_hold_invoice(
        &self,
        payment_hash: PaymentHash,
        amount_msat: Option<u64>,
        description: &str,
        expiry_secs: u32,
    ) -> Result<Bolt11Invoice, Error> {
        self.create_invoice_inner(amount_msat, description, expiry_secs, Some(payment_hash))
    }

    fn create_invoice_inner(
        &self,
        amount_msat: Option<u64>,
        description: &str,
        expiry_secs: u32,
        hold_hash: Option<PaymentHash>,
    ) -> Result<Bolt11Invoice, Error> {
        if amount_msat == Some(0) {
            return Err(Error::InvalidAmount(
                "invoice amount must be greater than 0".into(),
            ));
        }
        if expiry_secs == 0 {
            return Err(Error::InvalidInput(
                "invoice expiry must be at least 1 second".into(),
            ));
        }
        let description = Description::new(description.to_string())
            .map_err(|e| Error::InvoiceCreation(format!("description: {e}")))?;
        let params = Bolt11InvoiceParameters {
            amount_msats: amount_msat,
            description: Bolt11InvoiceDescription::Direct(description),
            invoice_expiry_delta_secs: Some(expiry_secs),
            payment_hash: hold_hash,
            min_final_cltv_expiry_delta: hold_hash
                .map(|_| self.inner.config.hold_cltv_expiry_delta),
        };
        let invoice = self
            .inner
            .channel_manager
            .create_bolt11_invoice(params)
            .map_err(|e| Error::InvoiceCreation(format!("{e:?}")))?;
        let hash = PaymentHash(invoice.payment_hash().to_byte_array());
        let now = now_ms();
        self.inner.payments.insert(&PaymentDetails {
            payment_hash: hash,
            direction: PaymentDirection::Inbound,
            kind: if hold_hash.is_some() {
                PaymentKind::Bolt11Hold
            } else {
                PaymentKind::Bolt11
            },
            status: PaymentStatus::Pending,
            amount_msat,
            fee_msat: None,
            preimage: None,
            invoice: Some(invoice.to_string()),
            failure_reason: None,
            created_at_ms: now,
            updated_at_ms: now,
        })?;
        Ok(invoice)
    }

    /// Settles a held payment with its preimage.
    ///
    /// # Errors
    /// [`Error::UnknownPayment`] if no held payment has this preimage's hash.
    pub fn claim_payment(&self, preimage: PaymentPreimage) -> Result<(), Error> {
        let hash = PaymentHash(bitcoin::hashes::sha256::Hash::hash(&preimage.0).to_byte_array());
        let p = self
            .inner
            .payments
            .get(&hash, PaymentDirection::Inbound)?
            .filter(|p| p.status == PaymentStatus::Pending)
            .ok_or_else(|| Error::UnknownPayment(hash.0.to_lower_hex_string()))?;
        let _ = p;
        self.inner
            .payments
            .update(&hash, PaymentDirection::Inbound, |p| {
                p.preimage = Some(preimage)
            })?;
        self.inner.channel_manager.claim_funds(preimage);
        Ok(())
    }

    /// Fails a held (or any pending inbound) payment back to the payer and marks it failed;
    /// later payments to the same hash are refused too.
    ///
    /// # Errors
    /// [`Error::UnknownPayment`].
    pub fn fail_payment(&self, payment_hash: PaymentHash) -> Result<(), Error> {
        self.inner
            .payments
            .update(&payment_hash, PaymentDirection::Inbound, |p| {
                p.status = PaymentStatus::Failed;
                p.failure_reason = Some("failed by the recipient".into());
            })?
            .ok_or_else(|| Error::UnknownPayment(payment_hash.0.to_lower_hex_string()))?;
        self.inner
            .channel_manager
            .fail_htlc_backwards(&payment_hash);
        Ok(())
    }

    /// Pays a BOLT11 invoice; `amount_msat` is required for open-amount invoices and refused
    /// below a fixed amount. Returns at once with the payment hash; the outcome arrives as
    /// [`Event::PaymentSuccessful`] or [`Event::PaymentFailed`].
    ///
    /// # Errors
    /// [`Error::InvalidInvoice`], [`Error::InvalidAmount`], [`Error::DuplicatePayment`],
    /// [`Error::PaymentSending`].
    pub fn pay_invoice(
        &self,
        invoice: &str,
        amount_msat: Option<u64>,
        max_fee_msat: Option<u64>,
    ) -> Result<PaymentHash, Error> {
        let invoice: Bolt11Invoice = invoice
            .trim()
            .parse()
            .map_err(|e| Error::InvalidInvoice(format!("{e}")))?;
        if invoice.network() != self.inner.config.network {
            return Err(Error::InvalidInvoice(format!(
                "invoice is for {}, this node runs on {}",
                invoice.network(),
                self.inner.config.network
            )));
        }
        if invoice.is_expired() {
            return Err(Error::InvalidInvoice("invoice has expired".into()));
        }
        let amount = match (invoice.amount_milli_satoshis(), amount_msat) {
            (None, None) => {
                return Err(Error::InvalidAmount(
                    "the invoice has no amount; give one".into(),
                ))
            }
            (_, Some(0)) => {
                return Err(Error::InvalidAmount("amount must be greater than 0".into()))
            }
            (Some(a), Some(b)) if b < a => {
                return Err(Error::InvalidAmount(format!(
                    "{b} msat is below the invoice's {a} msat"
                )))
            }
            (Some(a), None) => a,
            (_, Some(b)) => b,
        };
        let hash = PaymentHash(invoice.payment_hash().to_byte_array());
        if invoice.recover_payee_pub_key() == self.node_id() {
            return Err(Error::PaymentSending("cannot pay our own invoice".into()));
        }
        if let Some(p) = self.inner.payments.get(&hash, PaymentDirection::Outbound)? {
            if p.status != PaymentStatus::Failed {
                return Err(Error::DuplicatePayment(hash.0.to_lower_hex_string()));
            }
        }
        let now = now_ms();
        self.inner.payments.upsert(&PaymentDetails {
            payment_hash: hash,
            direction: PaymentDirection::Outbound,
            kind: PaymentKind::Bolt11,
            status: PaymentStatus::Pending,
            amount_msat: Some(amount),
            fee_msat: None,
            preimage: None,
            invoice: Some(invoice.to_string()),
            failure_reason: None,
            created_at_ms: now,
            updated_at_ms: now,
        })?;
        let route_config = RouteParametersConfig {
            max_total_routing_fee_msat: max_fee_msat,
            ..Default::default()
        };
        let amount_arg = if invoice.amount_milli_satoshis().is_none() || amount_msat.is_some() {
            Some(amount)
        } else {
            None
        };
        self.inner
            .channel_manager
            .pay_for_bolt11_invoice(
                &invoice,
                PaymentId(hash.0),
                amount_arg,
                route_config,
                Retry::Timeout(Duration::from_secs(10)),
            )
            .map_err(|e| {
                let _ = self
                    .inner
                    .payments
                    .update(&hash, PaymentDirection::Outbound, |p| {
                        p.status = PaymentStatus::Failed;
                        p.failure_reason = Some(format!("{e:?}"));
                    });
                match e {
                    lightning::ln::channelmanager::Bolt11PaymentError::InvalidAmount => {
                        Error::InvalidAmount("amount rejected for this invoice".into())
                    }
                    lightning::ln::channelmanager::Bolt11PaymentError::SendingFailed(
                        lightning::ln::channelmanager::RetryableSendFailure::DuplicatePayment,
                    ) => Error::DuplicatePayment(hash.0.to_lower_hex_string()),
                    e => Error::PaymentSending(format!("{e:?}")),
                }
            })?;
        Ok(hash)
    }

    /// Sends `amount_msat` to `node_id` without an invoice (keysend).
    ///
    /// # Errors
    /// [`Error::InvalidNodeId`], [`Error::InvalidAmount`], [`Error::PaymentSending`].
    pub fn keysend(&self, node_id: &str, amount_msat: u64) -> Result<PaymentHash, Error> {
        let node_id = parse_node_id(node_id)?;
        if amount_msat == 0 {
            return Err(Error::InvalidAmount("amount must be greater than 0".into()));
        }
        let preimage = PaymentPreimage(rand::random());
        let hash = PaymentHash(bitcoin::hashes::sha256::Hash::hash(&preimage.0).to_byte_array());
        let now = now_ms();
        self.inner.payments.insert(&PaymentDetails {
            payment_hash: hash,
            direction: PaymentDirection::Outbound,
            kind: PaymentKind::Keysend,
            status: PaymentStatus::Pending,
            amount_msat: Some(amount_msat),
            fee_msat: None,
            preimage: Some(preimage),
            invoice: None,
            failure_reason: None,
            created_at_ms: now,
            updated_at_ms: now,
        })?;
        let params = RouteParameters::from_payment_params_and_value(
            PaymentParameters::for_keysend(node_id, 40, false),
            amount_msat,
        );
        self.inner
            .channel_manager
            .send_spontaneous_payment(
                Some(preimage),
                RecipientOnionFields::spontaneous_empty(),
                PaymentId(hash.0),
                params,
                Retry::Timeout(Duration::from_secs(10)),
            )
            .map_err(|e| {
                let _ = self
                    .inner
                    .payments
                    .update(&hash, PaymentDirection::Outbound, |p| {
                        p.status = PaymentStatus::Failed;
                        p.failure_reason = Some(format!("{e:?}"));
                    });
                Error::PaymentSending(format!("{e:?}"))
            })?;
        Ok(hash)
    }

    /// The payment with this hash: the outbound one if we paid it, else the inbound one.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn payment(&self, payment_hash: &PaymentHash) -> Result<Option<PaymentDetails>, Error> {
        match self
            .inner
            .payments
            .get(payment_hash, PaymentDirection::Outbound)?
        {
            Some(p) => Ok(Some(p)),
            None => self
                .inner
                .payments
                .get(payment_hash, PaymentDirection::Inbound),
        }
    }

    /// The inbound payment (invoice) with this hash.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn inbound_payment(
        &self,
        payment_hash: &PaymentHash,
    ) -> Result<Option<PaymentDetails>, Error> {
        self.inner
            .payments
            .get(payment_hash, PaymentDirection::Inbound)
    }

    /// Every payment, newest first.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn list_payments(&self) -> Result<Vec<PaymentDetails>, Error> {
        self.inner.payments.list()
    }

    // ---- events ------------------------------------------------------------------------------

    /// The oldest event not yet acknowledged, without waiting.
    pub fn next_event(&self) -> Option<Event> {
        self.inner.events.next_event()
    }

    /// Blocks until an event is available and returns it (it stays queued until
    /// [`Node::event_handled`]).
    pub fn wait_next_event(&self) -> Event {
        loop {
            if let Some(e) = self.inner.events.wait_next_event(None) {
                return e;
            }
        }
    }

    /// Like [`Node::wait_next_event`], giving up after `timeout`.
    pub fn wait_next_event_timeout(&self, timeout: Duration) -> Option<Event> {
        self.inner.events.wait_next_event(Some(timeout))
    }

    /// Waits asynchronously for the next event.
    pub async fn next_event_async(&self) -> Event {
        self.inner.events.next_event_async().await
    }

    /// Acknowledges (removes) the event [`Node::next_event`] returned.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn event_handled(&self) -> Result<(), Error> {
        self.inner.events.event_handled()
    }
}

/// Signals the tasks to stop, waits for the processor's final persistence and shuts the
/// runtime down, on a separate thread so it is safe to call from async code.
fn shutdown(inner: &Inner, r: Running) {
    std::thread::scope(|s| {
        s.spawn(|| {
            r.runtime.block_on(async {
                // 1. No new connections, reconnections, syncs or broadcasts.
                let _ = r.stop.send(true);
                for t in r.tasks {
                    let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
                }
                // 2. No more peer messages: nothing can change channel state after this.
                inner.peer_manager.disconnect_all_peers();
                // 3. The processor hands out pending events and writes the final manager,
                //    which is then at least as new as every monitor (a stale manager would make
                //    LDK force-close on the next start).
                let _ = r.stop_processor.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(10), r.processor).await;
            });
            r.runtime.shutdown_timeout(Duration::from_secs(5));
        });
    });
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(r) = self.running().take() {
            shutdown(&self.inner, r);
        }
    }
}
