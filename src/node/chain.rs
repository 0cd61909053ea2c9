//! Chain data: block and transaction sync, fee estimates and broadcasting, from bitcoind's RPC
//! interface or an Esplora HTTP server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bdk_esplora::EsploraAsyncExt;
use bitcoin::{BlockHash, FeeRate, Network, Transaction, Txid};
use lightning::chain::chaininterface::{
    BroadcasterInterface, ConfirmationTarget, FeeEstimator, FEERATE_FLOOR_SATS_PER_KW,
};
use lightning::chain::{BestBlock, Confirm, Filter, Listen, WatchedOutput};
use lightning_block_sync::http::{HttpEndpoint, JsonResponse};
use lightning_block_sync::init::{synchronize_listeners, validate_best_block_header};
use lightning_block_sync::poll::{ChainPoller, ChainTip, ValidatedBlockHeader};
use lightning_block_sync::rpc::RpcClient;
use lightning_block_sync::{SpvClient, UnboundedCache};
use lightning_transaction_sync::EsploraSyncClient;

use super::types::{ChainMonitor, ChannelManager, Sweeper};
use super::wallet::Wallet;
use crate::logger::LdkLogger;
use crate::Error;

/// Where the node gets chain data from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainSourceConfig {
    /// An Esplora HTTP API, e.g. `https://blockstream.info/api`.
    Esplora {
        /// Base URL, without a trailing slash.
        url: String,
    },
    /// bitcoind's JSON-RPC interface.
    BitcoindRpc {
        /// Host name or IP address.
        host: String,
        /// RPC port.
        port: u16,
        /// User name and password (or the contents of bitcoind's cookie file, split at `:`).
        user: String,
        /// Password.
        password: String,
    },
}

/// Fee-rate cache fed by the chain source, with floors LDK can rely on.
pub(crate) struct Fees {
    rates: RwLock<HashMap<ConfirmationTarget, u32>>,
}

/// Block targets we ask the chain source for.
const TARGETS: [u16; 5] = [1, 6, 12, 144, 1008];

fn conf_target_blocks(t: ConfirmationTarget) -> u16 {
    match t {
        ConfirmationTarget::MaximumFeeEstimate => 1,
        ConfirmationTarget::UrgentOnChainSweep => 6,
        ConfirmationTarget::OutputSpendingFee => 12,
        ConfirmationTarget::NonAnchorChannelFee => 12,
        ConfirmationTarget::ChannelCloseMinimum => 144,
        ConfirmationTarget::AnchorChannelFee => 1008,
        ConfirmationTarget::MinAllowedAnchorChannelRemoteFee => 1008,
        ConfirmationTarget::MinAllowedNonAnchorChannelRemoteFee => 1008,
    }
}

const ALL_TARGETS: [ConfirmationTarget; 8] = [
    ConfirmationTarget::MaximumFeeEstimate,
    ConfirmationTarget::UrgentOnChainSweep,
    ConfirmationTarget::OutputSpendingFee,
    ConfirmationTarget::NonAnchorChannelFee,
    ConfirmationTarget::ChannelCloseMinimum,
    ConfirmationTarget::AnchorChannelFee,
    ConfirmationTarget::MinAllowedAnchorChannelRemoteFee,
    ConfirmationTarget::MinAllowedNonAnchorChannelRemoteFee,
];

/// Fallback rates (sat per 1000 weight) used until the chain source gives estimates, or when
/// it has none (regtest).
fn fallback_rate(t: ConfirmationTarget) -> u32 {
    match t {
        ConfirmationTarget::MaximumFeeEstimate | ConfirmationTarget::UrgentOnChainSweep => 5_000,
        ConfirmationTarget::OutputSpendingFee | ConfirmationTarget::NonAnchorChannelFee => 1_000,
        _ => FEERATE_FLOOR_SATS_PER_KW,
    }
}

impl Fees {
    pub(crate) fn new() -> Self {
        Self {
            rates: RwLock::new(HashMap::new()),
        }
    }

    /// Replaces the estimates from `by_blocks` (block target → sat/kw).
    pub(crate) fn update(&self, by_blocks: &HashMap<u16, u32>) {
        if by_blocks.is_empty() {
            return;
        }
        let mut rates = self.rates.write().unwrap_or_else(|p| p.into_inner());
        for t in ALL_TARGETS {
            let blocks = conf_target_blocks(t);
            // The estimate for the nearest target at or above ours, else the nearest below.
            let rate = by_blocks
                .iter()
                .filter(|(b, _)| **b >= blocks)
                .min_by_key(|(b, _)| **b)
                .or_else(|| by_blocks.iter().max_by_key(|(b, _)| **b))
                .map(|(_, r)| *r);
            if let Some(mut rate) = rate {
                if t == ConfirmationTarget::MinAllowedAnchorChannelRemoteFee
                    || t == ConfirmationTarget::MinAllowedNonAnchorChannelRemoteFee
                {
                    // Accept peers' rates somewhat below our own view.
                    rate = rate.saturating_sub(250);
                }
                rates.insert(t, rate.max(FEERATE_FLOOR_SATS_PER_KW));
            }
        }
    }

    /// The fee rate for `target` as a [`FeeRate`].
    pub(crate) fn fee_rate(&self, target: ConfirmationTarget) -> FeeRate {
        FeeRate::from_sat_per_kwu(self.get_est_sat_per_1000_weight(target) as u64)
    }
}

impl FeeEstimator for Fees {
    fn get_est_sat_per_1000_weight(&self, target: ConfirmationTarget) -> u32 {
        let rates = self.rates.read().unwrap_or_else(|p| p.into_inner());
        rates
            .get(&target)
            .copied()
            .unwrap_or_else(|| fallback_rate(target))
            .max(FEERATE_FLOOR_SATS_PER_KW)
    }
}

/// Hands LDK's transactions to a task that broadcasts them through the chain source.
pub(crate) struct Broadcaster {
    queue: tokio::sync::mpsc::UnboundedSender<Vec<Transaction>>,
}

impl Broadcaster {
    pub(crate) fn new() -> (Self, tokio::sync::mpsc::UnboundedReceiver<Vec<Transaction>>) {
        let (queue, rx) = tokio::sync::mpsc::unbounded_channel();
        (Self { queue }, rx)
    }
}

impl BroadcasterInterface for Broadcaster {
    fn broadcast_transactions(&self, txs: &[&Transaction]) {
        let txs: Vec<Transaction> = txs.iter().map(|t| (*t).clone()).collect();
        if self.queue.send(txs).is_err() {
            log::warn!("broadcast queue closed; transactions will be rebroadcast on restart");
        }
    }
}

/// The chain listeners one sync feeds.
pub(crate) struct Listeners {
    pub(crate) wallet: Arc<Wallet>,
    pub(crate) channel_manager: Arc<ChannelManager>,
    pub(crate) chain_monitor: Arc<ChainMonitor>,
    pub(crate) sweeper: Arc<Sweeper>,
}

impl Listen for Listeners {
    fn filtered_block_connected(
        &self,
        header: &bitcoin::block::Header,
        txdata: &lightning::chain::transaction::TransactionData,
        height: u32,
    ) {
        self.wallet.filtered_block_connected(header, txdata, height);
        self.channel_manager
            .filtered_block_connected(header, txdata, height);
        self.chain_monitor
            .filtered_block_connected(header, txdata, height);
        self.sweeper
            .filtered_block_connected(header, txdata, height);
    }
    fn block_connected(&self, block: &bitcoin::Block, height: u32) {
        self.wallet.block_connected(block, height);
        self.channel_manager.block_connected(block, height);
        self.chain_monitor.block_connected(block, height);
        self.sweeper.block_connected(block, height);
    }
    fn blocks_disconnected(&self, fork_point: BestBlock) {
        self.wallet.blocks_disconnected(fork_point);
        self.channel_manager.blocks_disconnected(fork_point);
        self.chain_monitor.blocks_disconnected(fork_point);
        self.sweeper.blocks_disconnected(fork_point);
    }
}

struct BitcoindState {
    cache: UnboundedCache,
    tip: Option<ValidatedBlockHeader>,
}

enum Backend {
    Bitcoind {
        rpc: Arc<RpcClient>,
        state: tokio::sync::Mutex<BitcoindState>,
    },
    Esplora {
        client: esplora_client::AsyncClient,
        tx_sync: EsploraSyncClient<Arc<LdkLogger>>,
        sync_lock: tokio::sync::Mutex<()>,
    },
}

/// Chain data for the node: sync, fees, broadcast.
pub(crate) struct ChainSource {
    backend: Backend,
    network: Network,
    pub(crate) fees: Arc<Fees>,
    last_sync_unix: Mutex<Option<u64>>,
}

fn chain_err(e: impl std::fmt::Debug) -> Error {
    Error::ChainSource(format!("{e:?}"))
}

/// An Esplora error as text: an HTTP error answer keeps the server's message verbatim (its
/// `Debug` form would escape the quotes of the JSON that bitcoind's errors carry).
fn esplora_err_text(e: &esplora_client::Error) -> String {
    match e {
        esplora_client::Error::HttpResponse { status, message } => {
            format!("HTTP {status}: {message}")
        }
        e => format!("{e:?}"),
    }
}

fn esplora_err(e: esplora_client::Error) -> Error {
    Error::ChainSource(esplora_err_text(&e))
}

/// An Esplora fee estimate (sat/vB, a JSON float) in sat per 1000 weight units, rounded up.
///
/// 1 vB = 4 WU, so the factor is 250. `f64` cannot hold most decimal rates exactly (8.06
/// sat/vB times 250 comes out a hair above 2015), so the product is first rounded to a
/// millionth of a sat/kWU and only then rounded up.
pub(crate) fn esplora_sat_per_vb_to_sat_per_kw(sat_per_vb: f64) -> Option<u32> {
    if !sat_per_vb.is_finite() || sat_per_vb <= 0.0 {
        return None;
    }
    // Saturating float-to-int cast; absurd rates end at u32::MAX rather than wrapping.
    let micro = (sat_per_vb * 250_000_000.0).round() as u64;
    Some(u32::try_from(micro.div_ceil(1_000_000)).unwrap_or(u32::MAX))
}

/// bitcoind's fee rate (BTC per kvB, a decimal number) in sat per 1000 weight units, without
/// going through floating point.
pub(crate) fn btc_per_kvb_to_sat_per_kw(n: &serde_json::Number) -> Option<u32> {
    let s = n.to_string();
    if s.contains(['e', 'E', '-']) {
        return None;
    }
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let mut frac = frac.to_string();
    if frac.len() > 8 {
        frac.truncate(8);
    }
    while frac.len() < 8 {
        frac.push('0');
    }
    let sat_per_kvb: u64 =
        int.parse::<u64>().ok()?.checked_mul(100_000_000)? + frac.parse::<u64>().ok()?;
    // 1 kvB = 4 kWU.
    u32::try_from(sat_per_kvb.div_ceil(4)).ok()
}

struct FeeResponse(Option<u32>);
impl TryFrom<JsonResponse> for FeeResponse {
    type Error = std::io::Error;
    fn try_from(r: JsonResponse) -> std::io::Result<Self> {
        Ok(FeeResponse(
            r.0.get("feerate")
                .and_then(|v| v.as_number())
                .and_then(btc_per_kvb_to_sat_per_kw),
        ))
    }
}
/// `sendrawtransaction`'s answer: the txid, checked to be one.
struct TxidResponse;
impl TryFrom<JsonResponse> for TxidResponse {
    type Error = std::io::Error;
    fn try_from(r: JsonResponse) -> std::io::Result<Self> {
        let s =
            r.0.as_str()
                .ok_or_else(|| std::io::Error::other("expected a txid string"))?;
        s.parse::<Txid>()
            .map(|_| TxidResponse)
            .map_err(std::io::Error::other)
    }
}
struct MempoolMinFee(Option<u32>);
impl TryFrom<JsonResponse> for MempoolMinFee {
    type Error = std::io::Error;
    fn try_from(r: JsonResponse) -> std::io::Result<Self> {
        Ok(MempoolMinFee(
            r.0.get("mempoolminfee")
                .and_then(|v| v.as_number())
                .and_then(btc_per_kvb_to_sat_per_kw),
        ))
    }
}

impl ChainSource {
    pub(crate) fn new(
        config: &ChainSourceConfig,
        network: Network,
        fees: Arc<Fees>,
    ) -> Result<Self, Error> {
        let backend = match config {
            ChainSourceConfig::BitcoindRpc {
                host,
                port,
                user,
                password,
            } => {
                use base64::Engine;
                let creds =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                let endpoint = HttpEndpoint::for_host(host.clone()).with_port(*port);
                Backend::Bitcoind {
                    rpc: Arc::new(RpcClient::new(&creds, endpoint)),
                    state: tokio::sync::Mutex::new(BitcoindState {
                        cache: UnboundedCache::new(),
                        tip: None,
                    }),
                }
            }
            ChainSourceConfig::Esplora { url } => {
                let url = url.trim_end_matches('/').to_string();
                let client = esplora_client::Builder::new(&url)
                    .timeout(30)
                    .build_async()
                    .map_err(|e| Error::InvalidConfig(format!("esplora url {url}: {e}")))?;
                let tx_sync = EsploraSyncClient::from_client(client.clone(), Arc::new(LdkLogger));
                Backend::Esplora {
                    client,
                    tx_sync,
                    sync_lock: tokio::sync::Mutex::new(()),
                }
            }
        };
        Ok(Self {
            backend,
            network,
            fees,
            last_sync_unix: Mutex::new(None),
        })
    }

    /// Unix time of the last successful sync.
    pub(crate) fn last_sync_unix(&self) -> Option<u64> {
        *self
            .last_sync_unix
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The chain tip, used as the birthday of a fresh node.
    pub(crate) async fn tip(&self) -> Result<BestBlock, Error> {
        match &self.backend {
            Backend::Bitcoind { rpc, .. } => {
                let tip = validate_best_block_header(&**rpc)
                    .await
                    .map_err(chain_err)?;
                Ok(BestBlock {
                    block_hash: tip.header.block_hash(),
                    height: tip.height,
                })
            }
            Backend::Esplora { client, .. } => {
                // Height first, then the hash at that height: asking for the tip's hash and
                // then its height could pair a block with its successor's height when a block
                // arrives in between.
                let height = client.get_height().await.map_err(esplora_err)?;
                let hash: BlockHash = client.get_block_hash(height).await.map_err(esplora_err)?;
                Ok(BestBlock {
                    block_hash: hash,
                    height,
                })
            }
        }
    }

    /// Refreshes fee estimates; on regtest, where bitcoind has none, the fallbacks stay.
    pub(crate) async fn update_fees(&self) -> Result<(), Error> {
        let mut by_blocks = HashMap::new();
        match &self.backend {
            Backend::Bitcoind { rpc, .. } => {
                let floor = rpc
                    .call_method::<MempoolMinFee>("getmempoolinfo", &[])
                    .await
                    .map_err(chain_err)?
                    .0
                    .unwrap_or(FEERATE_FLOOR_SATS_PER_KW);
                for target in TARGETS {
                    let r = rpc
                        .call_method::<FeeResponse>(
                            "estimatesmartfee",
                            &[serde_json::json!(target), serde_json::json!("ECONOMICAL")],
                        )
                        .await
                        .map_err(chain_err)?;
                    if let Some(rate) = r.0 {
                        by_blocks.insert(target, rate.max(floor));
                    }
                }
            }
            Backend::Esplora { client, .. } => {
                let estimates = client.get_fee_estimates().await.map_err(esplora_err)?;
                for (blocks, sat_per_vb) in estimates {
                    if let Some(rate) = esplora_sat_per_vb_to_sat_per_kw(sat_per_vb) {
                        by_blocks.insert(blocks, rate);
                    }
                }
            }
        }
        self.fees.update(&by_blocks);
        Ok(())
    }

    /// Broadcasts one transaction; "already known/confirmed" counts as success.
    pub(crate) async fn broadcast(&self, tx: &Transaction) -> Result<Txid, Error> {
        let txid = tx.compute_txid();
        let res = match &self.backend {
            Backend::Bitcoind { rpc, .. } => {
                let hex = bitcoin::consensus::encode::serialize_hex(tx);
                rpc.call_method::<TxidResponse>("sendrawtransaction", &[serde_json::json!(hex)])
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Backend::Esplora { client, .. } => {
                client.broadcast(tx).await.map_err(|e| esplora_err_text(&e))
            }
        };
        match res {
            Ok(()) => Ok(txid),
            Err(e) if e.contains("already") || e.contains("txn-already-known") => Ok(txid),
            Err(e) => Err(Error::ChainSource(format!(
                "broadcast of {txid} failed: {e}"
            ))),
        }
    }

    /// Brings every listener up to the chain tip.
    pub(crate) async fn sync(&self, l: &Listeners) -> Result<(), Error> {
        match &self.backend {
            Backend::Bitcoind { rpc, state } => {
                let mut state = state.lock().await;
                let BitcoindState { cache, tip } = &mut *state;
                if tip.is_none() {
                    let mut listeners: Vec<(BlockHash, &(dyn Listen + Send + Sync))> = vec![
                        (l.wallet.best_block().block_hash, &*l.wallet),
                        (
                            l.channel_manager.current_best_block().block_hash,
                            &*l.channel_manager,
                        ),
                        (l.sweeper.current_best_block().block_hash, &*l.sweeper),
                    ];
                    let worst_monitor = l
                        .chain_monitor
                        .list_monitors()
                        .into_iter()
                        .filter_map(|id| {
                            l.chain_monitor
                                .get_monitor(id)
                                .ok()
                                .map(|m| m.current_best_block())
                        })
                        .min_by_key(|b| b.height);
                    if let Some(b) = worst_monitor {
                        listeners.push((b.block_hash, &*l.chain_monitor));
                    }
                    let new_tip = synchronize_listeners(&**rpc, self.network, cache, listeners)
                        .await
                        .map_err(chain_err)?;
                    *tip = Some(new_tip);
                }
                let current = tip.expect("set above");
                let poller = ChainPoller::new(Arc::clone(rpc), self.network);
                let mut spv = SpvClient::new(current, poller, cache, l);
                match spv.poll_best_tip().await.map_err(chain_err)? {
                    (ChainTip::Better(new_tip), _) => *tip = Some(new_tip),
                    (ChainTip::Common, _) | (ChainTip::Worse(_), _) => {}
                }
            }
            Backend::Esplora {
                client,
                tx_sync,
                sync_lock,
            } => {
                let _guard = sync_lock.lock().await;
                let confirmables: Vec<&(dyn Confirm + Sync + Send)> =
                    vec![&*l.channel_manager, &*l.chain_monitor, &*l.sweeper];
                tx_sync.sync(confirmables).await.map_err(chain_err)?;
                let request = l.wallet.sync_request();
                let update = client.sync(request, 4).await.map_err(|e| esplora_err(*e))?;
                l.wallet.apply_update(update)?;
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        *self
            .last_sync_unix
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(now);
        Ok(())
    }
}

impl Filter for ChainSource {
    fn register_tx(&self, txid: &Txid, script_pubkey: &bitcoin::Script) {
        if let Backend::Esplora { tx_sync, .. } = &self.backend {
            tx_sync.register_tx(txid, script_pubkey);
        }
    }
    fn register_output(&self, output: WatchedOutput) {
        if let Backend::Esplora { tx_sync, .. } = &self.backend {
            tx_sync.register_output(output);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_conversion_is_exact() {
        let n = |s: &str| serde_json::from_str::<serde_json::Number>(s).unwrap();
        // 0.00001 BTC/kvB = 1000 sat/kvB = 250 sat/kWU.
        assert_eq!(btc_per_kvb_to_sat_per_kw(&n("0.00001")), Some(250));
        assert_eq!(btc_per_kvb_to_sat_per_kw(&n("0.00012345")), Some(3087));
        assert_eq!(btc_per_kvb_to_sat_per_kw(&n("1")), Some(25_000_000));
        assert_eq!(btc_per_kvb_to_sat_per_kw(&n("-1")), None);
    }

    #[test]
    fn fees_have_floors_and_map_targets() {
        let fees = Fees::new();
        assert_eq!(
            fees.get_est_sat_per_1000_weight(ConfirmationTarget::AnchorChannelFee),
            253
        );
        let mut m = HashMap::new();
        m.insert(1, 10_000);
        m.insert(6, 5_000);
        m.insert(144, 100);
        fees.update(&m);
        assert_eq!(
            fees.get_est_sat_per_1000_weight(ConfirmationTarget::MaximumFeeEstimate),
            10_000
        );
        assert_eq!(
            fees.get_est_sat_per_1000_weight(ConfirmationTarget::UrgentOnChainSweep),
            5_000
        );
        // 12 blocks: nearest target above is 144.
        assert_eq!(
            fees.get_est_sat_per_1000_weight(ConfirmationTarget::OutputSpendingFee),
            253
        );
        // 1008 blocks: none above, so the largest below (144), floored.
        assert_eq!(
            fees.get_est_sat_per_1000_weight(ConfirmationTarget::AnchorChannelFee),
            253
        );
    }
}
