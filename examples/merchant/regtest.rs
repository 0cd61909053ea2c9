//! The regtest world of the demo (and the API, CLI and dashboard tests): bitcoind, a merchant
//! node and a customer node with a funded channel from the customer to the merchant.

use std::sync::Arc;

use lightkeeper::Node;
use lightkeeper_harness::{tempdir, Regtest, TempDir};

/// bitcoind plus the two nodes; dropping it stops bitcoind (stop the nodes first).
pub struct RegtestWorld {
    /// bitcoind.
    #[allow(dead_code)]
    pub rt: Regtest,
    /// The merchant's node (the API serves it).
    pub merchant: Arc<Node>,
    /// The paying customer's node.
    pub customer: Arc<Node>,
    _dirs: (TempDir, TempDir),
}

/// Starts bitcoind and both nodes, funds the customer and opens a `channel_sat` channel from
/// the customer to the merchant. `say` reports progress.
pub fn start(channel_sat: u64, say: &dyn Fn(&str)) -> RegtestWorld {
    say("starting bitcoind (regtest; built on first use, cached afterwards)");
    let rt = Regtest::start();
    let (md, cd) = (tempdir(), tempdir());
    let merchant = rt.node(md.path());
    let customer = rt.node(cd.path());
    say(&format!(
        "merchant node {} listening on {:?}",
        merchant.node_id(),
        merchant.listening_addresses()
    ));
    say(&format!("customer node {}", customer.node_id()));
    rt.fund(&customer, 1);
    say(&format!(
        "customer funded: {} sat on-chain",
        customer.onchain_balance().confirmed_sat
    ));
    rt.open_channel(&customer, &merchant, channel_sat, 0);
    let ch = &customer.list_channels()[0];
    say(&format!(
        "channel {} open: {} sat, customer can send {} sat",
        ch.channel_id,
        ch.capacity_sat,
        ch.outbound_capacity_msat / 1000
    ));
    RegtestWorld {
        rt,
        merchant: Arc::new(merchant),
        customer: Arc::new(customer),
        _dirs: (md, cd),
    }
}

impl RegtestWorld {
    /// Stops both nodes.
    pub fn stop(&self) {
        let _ = self.merchant.stop();
        let _ = self.customer.stop();
    }
}

/// A configuration for tests: API on a free loopback port, no rate providers (offline), fixed
/// fallback rates.
#[allow(dead_code)]
pub fn test_config() -> lightkeeper::api::config::AppConfig {
    let mut c = lightkeeper::api::config::AppConfig::default();
    c.api.listen = "127.0.0.1:0".into();
    c.rates.coingecko_enabled = false;
    c.rates.fallback.insert("EUR".into(), "60000".into());
    c.rates.fallback.insert("USD".into(), "65000".into());
    c
}
