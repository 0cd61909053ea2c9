//! The scenario on Lightkeeper.

use std::collections::HashSet;
use std::time::Duration;

use lightkeeper::{Event, Node};
use lightkeeper_harness::{tempdir, Regtest, TempDir};

use crate::{Pair, CHANNEL_SAT};

/// A Lightkeeper payer and merchant with one channel.
pub struct LightkeeperPair {
    payer: Node,
    merchant: Node,
    _dirs: Vec<TempDir>,
}

/// Builds the pair on `rt` and opens the channel.
pub fn setup(rt: &Regtest) -> LightkeeperPair {
    let (da, db) = (tempdir(), tempdir());
    // Production-like chain polling (the harness default of 100 ms is for tests); the setup
    // syncs explicitly where it waits for blocks.
    let node = |dir: &TempDir| {
        let n = rt
            .builder(dir.path())
            .sync_interval(Duration::from_secs(5))
            .build()
            .expect("build");
        n.start().expect("start");
        n
    };
    let payer = node(&da);
    let merchant = node(&db);
    rt.fund(&payer, 1);
    rt.open_channel(&payer, &merchant, CHANNEL_SAT, 0);
    let pair = LightkeeperPair {
        payer,
        merchant,
        _dirs: vec![da, db],
    };
    while pair.payer.next_event().is_some() {
        pair.payer.event_handled().unwrap();
    }
    pair.drain_merchant();
    pair
}

impl Pair for LightkeeperPair {
    fn invoice(&self, amount_msat: u64, description: &str) -> String {
        self.merchant
            .create_invoice(Some(amount_msat), description, 3600)
            .expect("invoice")
            .to_string()
    }
    fn pay(&self, invoice: &str) -> [u8; 32] {
        self.payer.pay_invoice(invoice, None, None).expect("pay").0
    }
    fn next_success(&self, pending: &HashSet<[u8; 32]>) -> [u8; 32] {
        loop {
            let e = self
                .payer
                .wait_next_event_timeout(Duration::from_secs(30))
                .expect("outcome within 30 s");
            self.payer.event_handled().expect("event_handled");
            match e {
                Event::PaymentSuccessful { payment_hash, .. }
                    if pending.contains(&payment_hash.0) =>
                {
                    return payment_hash.0
                }
                Event::PaymentFailed {
                    payment_hash,
                    reason,
                } => panic!("payment {payment_hash:?} failed: {reason}"),
                _ => {}
            }
        }
    }
    fn drain_merchant(&self) {
        while self.merchant.next_event().is_some() {
            self.merchant.event_handled().expect("event_handled");
        }
    }
    fn stop(self) {
        self.payer.stop().unwrap();
        self.merchant.stop().unwrap();
    }
}
