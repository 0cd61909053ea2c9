//! [`Builder`]: configure and assemble a [`Node`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::bip32::{ChildNumber, Xpriv};
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{BlockHash, Network};
use lightning::chain::{BestBlock, Watch};
use lightning::events::bump_transaction::sync::WalletSync;
use lightning::ln::channelmanager::{ChainParameters, ChannelManagerReadArgs};
use lightning::ln::peer_handler::{IgnoringMessageHandler, MessageHandler};
use lightning::routing::gossip::P2PGossipSync;
use lightning::routing::router::DefaultRouter;
use lightning::routing::scoring::{
    ProbabilisticScorer, ProbabilisticScoringDecayParameters, ProbabilisticScoringFeeParameters,
};
use lightning::routing::utxo::UtxoLookup;
use lightning::sign::{EntropySource, NodeSigner};
use lightning::util::config::UserConfig;
use lightning::util::persist::{
    KVStoreSync, CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE, NETWORK_GRAPH_PERSISTENCE_KEY,
    NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE, NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE,
    OUTPUT_SWEEPER_PERSISTENCE_KEY, OUTPUT_SWEEPER_PERSISTENCE_PRIMARY_NAMESPACE,
    OUTPUT_SWEEPER_PERSISTENCE_SECONDARY_NAMESPACE, SCORER_PERSISTENCE_KEY,
    SCORER_PERSISTENCE_PRIMARY_NAMESPACE, SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
};
use lightning::util::ser::ReadableArgs;
use lightning::util::sweep::OutputSweeper;

use super::chain::{Broadcaster, ChainSource, ChainSourceConfig, Fees};
use super::events::EventQueue;
use super::handler::EventHandler;
use super::payments::PaymentStore;
use super::store::{open_connection, SqliteStore, DB_FILE_NAME};
use super::types::{ChainMonitor, ChannelManager, Graph, Keys, PeerManager, Router, Sweeper};
use super::wallet::{NodeKeysManager, Wallet};
use super::{Inner, Node};
use crate::config::{default_user_config, Config, DEFAULT_ANCHOR_RESERVE_SAT};
use crate::logger::LdkLogger;
use crate::Error;

/// The mnemonic file's name inside the storage directory.
pub const MNEMONIC_FILE_NAME: &str = "mnemonic";

/// Smallest hold-invoice CLTV delta accepted: LDK's own minimum final delta (42 blocks, of
/// which 39 are its fail-back buffer).
const MIN_HOLD_CLTV_EXPIRY_DELTA: u16 = lightning::ln::channelmanager::MIN_FINAL_CLTV_EXPIRY_DELTA;
/// Largest hold-invoice CLTV delta accepted (a week): payers cap a route's total CLTV delta at
/// 2016 blocks, and the hops before us need their share of it.
const MAX_HOLD_CLTV_EXPIRY_DELTA: u16 = 1008;

/// Builds a [`Node`].
///
/// ```no_run
/// use lightkeeper::{Builder, Network};
/// let node = Builder::new()
///     .network(Network::Regtest)
///     .storage_dir("/tmp/merchant")
///     .chain_source_bitcoind_rpc("127.0.0.1", 18443, "user", "pass")
///     .listening_address("127.0.0.1:9735".parse().unwrap())
///     .build()?;
/// node.start()?;
/// # Ok::<(), lightkeeper::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    network: Network,
    storage_dir: Option<PathBuf>,
    chain_source: Option<ChainSourceConfig>,
    listening_addresses: Vec<SocketAddr>,
    alias: Option<String>,
    mnemonic: Option<bip39::Mnemonic>,
    user_config: Option<UserConfig>,
    anchor_reserve_per_channel_sat: u64,
    accept_keysend: bool,
    hold_cltv_expiry_delta: u16,
    sync_interval: Duration,
    fee_update_interval: Duration,
    monitor_replication: Option<crate::tower::ReplicationConfig>,
    restore_from: Option<crate::tower::ReplicaConfig>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// A builder for a Bitcoin mainnet node with default settings.
    pub fn new() -> Self {
        Self {
            network: Network::Bitcoin,
            storage_dir: None,
            chain_source: None,
            listening_addresses: Vec::new(),
            alias: None,
            mnemonic: None,
            user_config: None,
            anchor_reserve_per_channel_sat: DEFAULT_ANCHOR_RESERVE_SAT,
            accept_keysend: true,
            hold_cltv_expiry_delta: crate::config::DEFAULT_HOLD_CLTV_EXPIRY_DELTA,
            sync_interval: Duration::from_secs(30),
            fee_update_interval: Duration::from_secs(300),
            monitor_replication: None,
            restore_from: None,
        }
    }

    /// Sets the Bitcoin network.
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }
    /// Sets the directory for the database and mnemonic (required).
    pub fn storage_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.storage_dir = Some(dir.into());
        self
    }
    /// Uses an Esplora server for chain data.
    pub fn chain_source_esplora(mut self, url: impl Into<String>) -> Self {
        self.chain_source = Some(ChainSourceConfig::Esplora { url: url.into() });
        self
    }
    /// Uses bitcoind's RPC interface for chain data.
    pub fn chain_source_bitcoind_rpc(
        mut self,
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.chain_source = Some(ChainSourceConfig::BitcoindRpc {
            host: host.into(),
            port,
            user: user.into(),
            password: password.into(),
        });
        self
    }
    /// Adds an address to listen on for peers.
    pub fn listening_address(mut self, addr: SocketAddr) -> Self {
        self.listening_addresses.push(addr);
        self
    }
    /// Replaces the listening addresses.
    pub fn listening_addresses(mut self, addrs: Vec<SocketAddr>) -> Self {
        self.listening_addresses = addrs;
        self
    }
    /// Sets the node alias.
    pub fn alias(mut self, alias: impl Into<String>) -> Self {
        self.alias = Some(alias.into());
        self
    }
    /// Uses this BIP39 mnemonic instead of generating one on first start.
    pub fn mnemonic(mut self, mnemonic: bip39::Mnemonic) -> Self {
        self.mnemonic = Some(mnemonic);
        self
    }
    /// Overrides LDK's channel configuration (anchors and manual inbound acceptance stay on).
    pub fn user_config(mut self, config: UserConfig) -> Self {
        self.user_config = Some(config);
        self
    }
    /// On-chain reserve kept per anchor channel, in sat.
    pub fn anchor_reserve_per_channel_sat(mut self, sat: u64) -> Self {
        self.anchor_reserve_per_channel_sat = sat;
        self
    }
    /// Whether keysend payments are accepted (default: yes).
    pub fn accept_keysend(mut self, accept: bool) -> Self {
        self.accept_keysend = accept;
        self
    }
    /// Final CLTV expiry delta of hold invoices, in blocks (default
    /// [`crate::config::DEFAULT_HOLD_CLTV_EXPIRY_DELTA`], 144): the longer, the more time the
    /// merchant has to settle or cancel a held payment, and the longer the payer's funds are
    /// locked if the node goes away. Accepted range: 42 (LDK's minimum) to 1008 blocks.
    pub fn hold_cltv_expiry_delta(mut self, blocks: u16) -> Self {
        self.hold_cltv_expiry_delta = blocks;
        self
    }
    /// How often to poll the chain (default 30 s).
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval;
        self
    }

    /// Replicates every channel monitor and monitor update to replicas (another SQLite file,
    /// a tower) before LDK relies on it, and hands towers justice blobs; see
    /// [`crate::tower::persist`]. Default: the local database only.
    pub fn monitor_replication(mut self, config: crate::tower::ReplicationConfig) -> Self {
        self.monitor_replication = Some(config);
        self
    }
    /// After the local database was lost: copies the channel monitors from `replica` into the
    /// new database before the node starts (the same mnemonic is required to decrypt them).
    /// Then call [`Node::force_close_restored_channels`] on the started node.
    pub fn restore_monitors_from(mut self, replica: crate::tower::ReplicaConfig) -> Self {
        self.restore_from = Some(replica);
        self
    }

    fn config(&self) -> Result<Config, Error> {
        let storage_dir = self
            .storage_dir
            .clone()
            .ok_or_else(|| Error::InvalidConfig("storage_dir is required".into()))?;
        let chain_source = self.chain_source.clone().ok_or_else(|| {
            Error::InvalidConfig("a chain source (Esplora or bitcoind RPC) is required".into())
        })?;
        if let Some(a) = &self.alias {
            if a.len() > 32 {
                return Err(Error::InvalidConfig("alias is longer than 32 bytes".into()));
            }
        }
        if !(MIN_HOLD_CLTV_EXPIRY_DELTA..=MAX_HOLD_CLTV_EXPIRY_DELTA)
            .contains(&self.hold_cltv_expiry_delta)
        {
            return Err(Error::InvalidConfig(format!(
                "hold_cltv_expiry_delta must be {MIN_HOLD_CLTV_EXPIRY_DELTA}..={MAX_HOLD_CLTV_EXPIRY_DELTA} blocks, got {}",
                self.hold_cltv_expiry_delta
            )));
        }
        if self.sync_interval.is_zero() {
            return Err(Error::InvalidConfig(
                "sync_interval must be positive".into(),
            ));
        }
        let mut user_config = self.user_config.clone().unwrap_or_else(default_user_config);
        user_config
            .channel_handshake_config
            .negotiate_anchors_zero_fee_htlc_tx = true;
        user_config.manually_accept_inbound_channels = true;
        Ok(Config {
            network: self.network,
            storage_dir,
            chain_source,
            listening_addresses: self.listening_addresses.clone(),
            alias: self.alias.clone(),
            anchor_reserve_per_channel_sat: self.anchor_reserve_per_channel_sat,
            accept_keysend: self.accept_keysend,
            hold_cltv_expiry_delta: self.hold_cltv_expiry_delta,
            sync_interval: self.sync_interval,
            fee_update_interval: self.fee_update_interval,
            user_config,
        })
    }

    /// Opens (or creates) the node's state and assembles the node. Contacts the chain source
    /// once, on first start, to learn the chain tip.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::InvalidMnemonic`], [`Error::Storage`],
    /// [`Error::Corrupt`], [`Error::ChainSource`].
    pub fn build(self) -> Result<Node, Error> {
        let config = Arc::new(self.config()?);
        std::fs::create_dir_all(&config.storage_dir)?;
        let mnemonic = load_or_create_mnemonic(&config.storage_dir, self.mnemonic.as_ref())?;
        let seed = mnemonic.to_seed("");
        let master = Xpriv::new_master(config.network, &seed)
            .map_err(|e| Error::InvalidMnemonic(e.to_string()))?;
        let ldk_seed: [u8; 32] = master
            .derive_priv(&Secp256k1::new(), &[ChildNumber::Hardened { index: 535 }])
            .map_err(|e| Error::InvalidMnemonic(e.to_string()))?
            .private_key
            .secret_bytes();

        let db_path = config.storage_dir.join(DB_FILE_NAME);
        let store = SqliteStore::open(&db_path)?;
        let events = Arc::new(EventQueue::load(Arc::clone(&store))?);
        let wallet = Arc::new(Wallet::load_or_create(
            open_connection(&db_path)?,
            &master,
            config.network,
            Arc::clone(&events),
        )?);
        let fees = Arc::new(Fees::new());
        let chain = Arc::new(ChainSource::new(
            &config.chain_source,
            config.network,
            Arc::clone(&fees),
        )?);
        let logger = Arc::new(LdkLogger);

        let manager_bytes = match KVStoreSync::read(
            &*store,
            CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
            CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
            CHANNEL_MANAGER_PERSISTENCE_KEY,
        ) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::Storage(e.to_string())),
        };
        // A fresh node starts at the chain tip (the wallet does not scan from genesis).
        let tip = if manager_bytes.is_none() || wallet.best_block().height == 0 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let tip = rt.block_on(chain.tip())?;
            if wallet.best_block().height == 0 {
                wallet.set_birthday(tip)?;
            }
            Some(tip)
        } else {
            None
        };

        let keys: Arc<Keys> = Arc::new(NodeKeysManager::new(&ldk_seed, Arc::clone(&wallet)));
        let (broadcaster, broadcast_rx) = Broadcaster::new();
        let broadcaster = Arc::new(broadcaster);
        let backup_key = crate::tower::backup_key(&keys.get_peer_storage_key().inner);
        if let Some(replica) = &self.restore_from {
            crate::tower::replica::restore_into(&*replica.open()?, &store, &backup_key)?;
        }
        let local_monitors = Arc::new(super::types::LocalMonitorPersister::new(
            Arc::clone(&store),
            Arc::clone(&logger),
            super::types::MAX_PENDING_MONITOR_UPDATES,
            Arc::clone(&keys),
            Arc::clone(&keys),
            Arc::clone(&broadcaster),
            Arc::clone(&fees),
        ));
        let persister = Arc::new(match &self.monitor_replication {
            Some(cfg) => {
                let w = Arc::clone(&wallet);
                crate::tower::persist::ReplicatedPersister::replicated(
                    Arc::clone(&store),
                    Arc::clone(&local_monitors),
                    Arc::clone(&keys),
                    cfg,
                    backup_key,
                    Box::new(move || w.new_address().ok().map(|a| a.script_pubkey())),
                )?
            }
            None => crate::tower::persist::ReplicatedPersister::local(
                Arc::clone(&store),
                Arc::clone(&local_monitors),
                Arc::clone(&keys),
            ),
        });
        let chain_monitor: Arc<ChainMonitor> = Arc::new(ChainMonitor::new(
            Some(Arc::clone(&chain)),
            Arc::clone(&broadcaster),
            Arc::clone(&logger),
            Arc::clone(&fees),
            Arc::clone(&persister),
            Arc::clone(&keys),
            keys.get_peer_storage_key(),
        ));
        persister.set_chain_monitor(&chain_monitor);

        // Monitors first: they are the source of truth for channel funds. Each is the last full
        // monitor with its stored updates applied.
        let monitors = local_monitors
            .read_all_channel_monitors_with_updates()
            .map_err(|e| Error::Corrupt(format!("channel monitors: {e}")))?;
        // Updates left behind by a crash between a consolidation and its clean-up.
        if let Err(e) = local_monitors.cleanup_stale_updates(false) {
            log::warn!("could not remove stale monitor updates: {e}");
        }

        let graph: Arc<Graph> = Arc::new(
            match KVStoreSync::read(
                &*store,
                NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
                NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE,
                NETWORK_GRAPH_PERSISTENCE_KEY,
            ) {
                Ok(b) => Graph::read(&mut &b[..], Arc::clone(&logger))
                    .unwrap_or_else(|_| Graph::new(config.network, Arc::clone(&logger))),
                Err(_) => Graph::new(config.network, Arc::clone(&logger)),
            },
        );
        let decay = ProbabilisticScoringDecayParameters::default();
        let scorer = match KVStoreSync::read(
            &*store,
            SCORER_PERSISTENCE_PRIMARY_NAMESPACE,
            SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
            SCORER_PERSISTENCE_KEY,
        ) {
            Ok(b) => ProbabilisticScorer::read(
                &mut &b[..],
                (decay, Arc::clone(&graph), Arc::clone(&logger)),
            )
            .unwrap_or_else(|_| {
                ProbabilisticScorer::new(decay, Arc::clone(&graph), Arc::clone(&logger))
            }),
            Err(_) => ProbabilisticScorer::new(decay, Arc::clone(&graph), Arc::clone(&logger)),
        };
        let scorer = Arc::new(Mutex::new(scorer));
        let router: Arc<Router> = Arc::new(DefaultRouter::new(
            Arc::clone(&graph),
            Arc::clone(&logger),
            Arc::clone(&keys),
            Arc::clone(&scorer),
            ProbabilisticScoringFeeParameters::default(),
        ));
        let message_router = Arc::new(
            lightning::onion_message::messenger::DefaultMessageRouter::new(
                Arc::clone(&graph),
                Arc::clone(&keys),
            ),
        );

        let channel_manager: Arc<ChannelManager> = Arc::new(match manager_bytes {
            Some(bytes) => {
                let monitor_refs = monitors.iter().map(|(_, m)| m).collect();
                let args = ChannelManagerReadArgs::new(
                    Arc::clone(&keys),
                    Arc::clone(&keys),
                    Arc::clone(&keys),
                    Arc::clone(&fees),
                    Arc::clone(&chain_monitor),
                    Arc::clone(&broadcaster),
                    Arc::clone(&router),
                    Arc::clone(&message_router),
                    Arc::clone(&logger),
                    config.user_config.clone(),
                    monitor_refs,
                );
                let (_, cm) = <(BlockHash, ChannelManager)>::read(&mut &bytes[..], args)
                    .map_err(|e| Error::Corrupt(format!("channel manager: {e:?}")))?;
                cm
            }
            None => {
                let best_block = tip.unwrap_or_else(|| BestBlock::from_network(config.network));
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                ChannelManager::new(
                    Arc::clone(&fees),
                    Arc::clone(&chain_monitor),
                    Arc::clone(&broadcaster),
                    Arc::clone(&router),
                    Arc::clone(&message_router),
                    Arc::clone(&logger),
                    Arc::clone(&keys),
                    Arc::clone(&keys),
                    Arc::clone(&keys),
                    config.user_config.clone(),
                    ChainParameters {
                        network: config.network,
                        best_block,
                    },
                    now.as_secs() as u32,
                )
            }
        });
        for (_, monitor) in monitors {
            let id = monitor.channel_id();
            chain_monitor
                .watch_channel(id, monitor)
                .map_err(|_| Error::Corrupt(format!("channel monitor {id} rejected")))?;
        }

        let gossip = Arc::new(P2PGossipSync::new(
            Arc::clone(&graph),
            None::<Arc<dyn UtxoLookup + Send + Sync>>,
            Arc::clone(&logger),
        ));
        let triage = Arc::new(super::triage::HtlcTriage::new(
            Arc::clone(&channel_manager),
            Arc::clone(&keys),
        ));
        let handlers = MessageHandler {
            chan_handler: Arc::clone(&triage),
            route_handler: Arc::clone(&gossip),
            onion_message_handler: Arc::new(IgnoringMessageHandler {}),
            custom_message_handler: Arc::new(IgnoringMessageHandler {}),
            send_only_message_handler: Arc::clone(&chain_monitor),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let peer_manager: Arc<PeerManager> = Arc::new(PeerManager::new(
            handlers,
            now.as_secs() as u32,
            &keys.get_secure_random_bytes(),
            Arc::clone(&logger),
            Arc::clone(&keys),
        ));

        let sweeper_args = (
            Arc::clone(&broadcaster),
            Arc::clone(&fees),
            Some(Arc::clone(&chain)),
            Arc::clone(&keys),
            Arc::clone(&keys),
            Arc::clone(&store),
            Arc::clone(&logger),
        );
        let sweeper: Arc<Sweeper> = Arc::new(
            match KVStoreSync::read(
                &*store,
                OUTPUT_SWEEPER_PERSISTENCE_PRIMARY_NAMESPACE,
                OUTPUT_SWEEPER_PERSISTENCE_SECONDARY_NAMESPACE,
                OUTPUT_SWEEPER_PERSISTENCE_KEY,
            ) {
                Ok(b) => {
                    <(BestBlock, Sweeper)>::read(&mut &b[..], sweeper_args)
                        .map_err(|e| Error::Corrupt(format!("output sweeper: {e:?}")))?
                        .1
                }
                Err(_) => OutputSweeper::new(
                    channel_manager.current_best_block(),
                    Arc::clone(&broadcaster),
                    Arc::clone(&fees),
                    Some(Arc::clone(&chain)),
                    Arc::clone(&keys),
                    Arc::clone(&keys),
                    Arc::clone(&store),
                    Arc::clone(&logger),
                ),
            },
        );

        let payments = Arc::new(PaymentStore::new(Arc::clone(&store)));
        let handler = EventHandler {
            config: Arc::clone(&config),
            channel_manager: Arc::clone(&channel_manager),
            wallet: Arc::clone(&wallet),
            fees: Arc::clone(&fees),
            sweeper: Arc::clone(&sweeper),
            events: Arc::clone(&events),
            payments: Arc::clone(&payments),
            bump: lightning::events::bump_transaction::sync::BumpTransactionEventHandlerSync::new(
                Arc::clone(&broadcaster),
                Arc::new(WalletSync::new(Arc::clone(&wallet), Arc::clone(&logger))),
                Arc::clone(&keys),
                Arc::clone(&logger),
            ),
        };
        let _ = keys.get_node_id(lightning::sign::Recipient::Node);

        Ok(Node::new(Inner {
            config,
            store,
            wallet,
            chain,
            fees,
            chain_monitor,
            channel_manager,
            peer_manager,
            triage,
            graph,
            scorer,
            sweeper,
            events,
            payments,
            handler,
            broadcast_rx: Arc::new(tokio::sync::Mutex::new(broadcast_rx)),
            _broadcaster: broadcaster,
            persister,
        }))
    }
}

/// Reads the mnemonic from `dir`, or stores `given` (or a new 24-word one) there on first
/// start. The file is created with mode 0600.
fn load_or_create_mnemonic(
    dir: &Path,
    given: Option<&bip39::Mnemonic>,
) -> Result<bip39::Mnemonic, Error> {
    let path = dir.join(MNEMONIC_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let stored: bip39::Mnemonic = s.trim().parse().map_err(|e: bip39::Error| {
                Error::InvalidMnemonic(format!("{}: {e}", path.display()))
            })?;
            if let Some(g) = given {
                if g != &stored {
                    return Err(Error::InvalidConfig(format!(
                        "{} holds a different mnemonic than the one given",
                        path.display()
                    )));
                }
            }
            Ok(stored)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let m = match given {
                Some(m) => m.clone(),
                None => {
                    let entropy: [u8; 32] = rand::random();
                    bip39::Mnemonic::from_entropy(&entropy)
                        .map_err(|e| Error::InvalidMnemonic(e.to_string()))?
                }
            };
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&path)?;
            writeln!(f, "{m}")?;
            f.sync_all()?;
            Ok(m)
        }
        Err(e) => Err(Error::Storage(format!("{}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> Builder {
        Builder::new()
            .network(Network::Regtest)
            .storage_dir("/nonexistent/lightkeeper-config-test")
            .chain_source_bitcoind_rpc("127.0.0.1", 18443, "u", "p")
    }

    fn config_error(b: Builder) -> String {
        match b.config() {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = builder().config().unwrap();
        assert_eq!(
            c.hold_cltv_expiry_delta,
            crate::config::DEFAULT_HOLD_CLTV_EXPIRY_DELTA
        );
        assert!(
            c.user_config
                .channel_handshake_config
                .negotiate_anchors_zero_fee_htlc_tx
        );
    }

    #[test]
    fn out_of_range_settings_are_refused_with_their_name() {
        for blocks in [0, 41, 1009, u16::MAX] {
            let m = config_error(builder().hold_cltv_expiry_delta(blocks));
            assert!(m.contains("hold_cltv_expiry_delta"), "{m}");
        }
        for blocks in [42, 144, 1008] {
            let c = builder().hold_cltv_expiry_delta(blocks).config().unwrap();
            assert_eq!(c.hold_cltv_expiry_delta, blocks);
        }
        let m = config_error(builder().sync_interval(Duration::ZERO));
        assert!(m.contains("sync_interval"), "{m}");
        let m = config_error(builder().alias("x".repeat(33)));
        assert!(m.contains("alias"), "{m}");
        let m = config_error(Builder::new().network(Network::Regtest).storage_dir("/x"));
        assert!(m.contains("chain source"), "{m}");
    }
}
