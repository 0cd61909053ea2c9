//! The same scenario on ldk-node 0.7.1, the baseline.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use ldk_node::bitcoin::Network;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::{Builder, Event, Node};
use lightkeeper_harness::{tempdir, wait_until, Regtest, TempDir};

use crate::{Pair, CHANNEL_SAT};

/// An ldk-node payer and merchant with one channel.
pub struct LdkNodePair {
    payer: Node,
    merchant: Node,
    _dirs: Vec<TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn build(rt: &Regtest, dir: &TempDir) -> (Node, SocketAddress) {
    let (host, port, user, pass) = rt.rpc_params();
    let addr = SocketAddress::from_str(&format!("127.0.0.1:{}", free_port())).unwrap();
    let mut b = Builder::new();
    b.set_network(Network::Regtest);
    b.set_storage_dir_path(dir.path().to_string_lossy().into_owned());
    b.set_chain_source_bitcoind_rpc(host, port, user, pass);
    b.set_listening_addresses(vec![addr.clone()]).unwrap();
    let node = b.build().expect("build ldk-node");
    node.start().expect("start ldk-node");
    (node, addr)
}

fn wait_event(node: &Node, want: impl Fn(&Event) -> bool) {
    for _ in 0..1000 {
        let e = node.wait_next_event();
        node.event_handled().unwrap();
        if want(&e) {
            return;
        }
    }
    panic!("event not seen");
}

/// Builds the pair on `rt` and opens the channel.
pub fn setup(rt: &Regtest) -> LdkNodePair {
    let (da, db) = (tempdir(), tempdir());
    let (payer, _) = build(rt, &da);
    let (merchant, merchant_addr) = build(rt, &db);
    let addr = payer.onchain_payment().new_address().unwrap().to_string();
    rt.mine_to(1, &addr);
    rt.mine(100);
    wait_until(Duration::from_secs(60), "ldk-node wallet funded", || {
        payer.sync_wallets().ok();
        payer.list_balances().spendable_onchain_balance_sats > CHANNEL_SAT
    });
    payer
        .open_channel(merchant.node_id(), merchant_addr, CHANNEL_SAT, None, None)
        .expect("open");
    wait_event(&payer, |e| matches!(e, Event::ChannelPending { .. }));
    wait_until(Duration::from_secs(30), "funding in mempool", || {
        rt.rpc("getrawmempool", &[])
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    rt.mine(6);
    payer.sync_wallets().unwrap();
    merchant.sync_wallets().unwrap();
    wait_event(&payer, |e| matches!(e, Event::ChannelReady { .. }));
    wait_until(Duration::from_secs(30), "channel usable", || {
        payer.list_channels().iter().any(|c| c.is_usable)
    });
    let pair = LdkNodePair {
        payer,
        merchant,
        _dirs: vec![da, db],
    };
    pair.drain_merchant();
    pair
}

impl Pair for LdkNodePair {
    fn invoice(&self, amount_msat: u64, description: &str) -> String {
        let d =
            Bolt11InvoiceDescription::Direct(Description::new(description.to_string()).unwrap());
        self.merchant
            .bolt11_payment()
            .receive(amount_msat, &d, 3600)
            .expect("invoice")
            .to_string()
    }
    fn pay(&self, invoice: &str) -> [u8; 32] {
        let inv = Bolt11Invoice::from_str(invoice).unwrap();
        self.payer.bolt11_payment().send(&inv, None).expect("pay");
        *inv.payment_hash().as_ref()
    }
    fn next_success(&self, pending: &HashSet<[u8; 32]>) -> [u8; 32] {
        loop {
            let e = self.payer.wait_next_event();
            self.payer.event_handled().unwrap();
            match e {
                Event::PaymentSuccessful { payment_hash, .. }
                    if pending.contains(&payment_hash.0) =>
                {
                    return payment_hash.0
                }
                Event::PaymentFailed {
                    payment_hash,
                    reason,
                    ..
                } => {
                    panic!("ldk-node payment {payment_hash:?} failed: {reason:?}")
                }
                _ => {}
            }
        }
    }
    fn drain_merchant(&self) {
        while self.merchant.next_event().is_some() {
            self.merchant.event_handled().unwrap();
        }
    }
    fn stop(self) {
        self.payer.stop().unwrap();
        self.merchant.stop().unwrap();
    }
}
