//! Concrete LDK types the embedded node is assembled from.

use std::sync::{Arc, Mutex};

use lightning::chain::chainmonitor;
use lightning::ln::peer_handler::IgnoringMessageHandler;
use lightning::routing::gossip;
use lightning::routing::router::DefaultRouter;
use lightning::routing::scoring::{ProbabilisticScorer, ProbabilisticScoringFeeParameters};
use lightning::routing::utxo::UtxoLookup;
use lightning::sign::InMemorySigner;
use lightning::util::sweep::OutputSweeper;
use lightning_net_tokio::SocketDescriptor;

use super::chain::{Broadcaster, ChainSource, Fees};
use super::store::SqliteStore;
use super::wallet::NodeKeysManager;
use crate::logger::LdkLogger;

pub(crate) type Logger = LdkLogger;
pub(crate) type Keys = NodeKeysManager;

pub(crate) type ChainMonitor = chainmonitor::ChainMonitor<
    InMemorySigner,
    Arc<ChainSource>,
    Arc<Broadcaster>,
    Arc<Fees>,
    Arc<Logger>,
    Arc<crate::tower::persist::ReplicatedPersister>,
    Arc<Keys>,
>;

/// Local channel-monitor persistence: a full monitor plus the updates since, consolidated every
/// [`MAX_PENDING_MONITOR_UPDATES`] updates, so an update costs one small write instead of
/// rewriting a monitor that grows with every payment.
pub(crate) type LocalMonitorPersister = lightning::util::persist::MonitorUpdatingPersister<
    Arc<SqliteStore>,
    Arc<Logger>,
    Arc<Keys>,
    Arc<Keys>,
    Arc<Broadcaster>,
    Arc<Fees>,
>;

/// Updates stored before the monitor is rewritten whole.
pub(crate) const MAX_PENDING_MONITOR_UPDATES: u64 = 100;

pub(crate) type Graph = gossip::NetworkGraph<Arc<Logger>>;
pub(crate) type Scorer = ProbabilisticScorer<Arc<Graph>, Arc<Logger>>;
pub(crate) type Router = DefaultRouter<
    Arc<Graph>,
    Arc<Logger>,
    Arc<Keys>,
    Arc<Mutex<Scorer>>,
    ProbabilisticScoringFeeParameters,
    Scorer,
>;
pub(crate) type MessageRouter =
    lightning::onion_message::messenger::DefaultMessageRouter<Arc<Graph>, Arc<Logger>, Arc<Keys>>;

pub(crate) type ChannelManager = lightning::ln::channelmanager::ChannelManager<
    Arc<ChainMonitor>,
    Arc<Broadcaster>,
    Arc<Keys>,
    Arc<Keys>,
    Arc<Keys>,
    Arc<Fees>,
    Arc<Router>,
    Arc<MessageRouter>,
    Arc<Logger>,
>;

pub(crate) type GossipSync =
    gossip::P2PGossipSync<Arc<Graph>, Arc<dyn UtxoLookup + Send + Sync>, Arc<Logger>>;

pub(crate) type PeerManager = lightning::ln::peer_handler::PeerManager<
    SocketDescriptor,
    Arc<super::triage::HtlcTriage>,
    Arc<GossipSync>,
    Arc<IgnoringMessageHandler>,
    Arc<Logger>,
    Arc<IgnoringMessageHandler>,
    Arc<Keys>,
    Arc<ChainMonitor>,
>;

pub(crate) type Sweeper = OutputSweeper<
    Arc<Broadcaster>,
    Arc<Keys>,
    Arc<Fees>,
    Arc<ChainSource>,
    Arc<SqliteStore>,
    Arc<Logger>,
    Arc<Keys>,
>;
