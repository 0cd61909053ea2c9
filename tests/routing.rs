//! Three nodes on real regtest: A pays C through B, B earns its forwarding fee.

use std::time::Duration;

use lightkeeper::config::default_user_config;
use lightkeeper::Event;
use lightkeeper_harness::{expect_event, tempdir, wait_until, Regtest};

const T: Duration = Duration::from_secs(30);

#[test]
fn three_node_route_pays_forwarding_fee() {
    let rt = Regtest::start();
    let (da, db, dc) = (tempdir(), tempdir(), tempdir());
    let a = rt.node(da.path());
    // B routes: it must accept forwards onto C's private channel. Its fee: 1000 msat base +
    // 100 ppm.
    let mut cfg = default_user_config();
    cfg.accept_forwards_to_priv_channels = true;
    cfg.channel_config.forwarding_fee_base_msat = 1_000;
    cfg.channel_config.forwarding_fee_proportional_millionths = 100;
    let b = rt.builder(db.path()).user_config(cfg).build().unwrap();
    b.start().unwrap();
    let c = rt.node(dc.path());
    rt.fund(&a, 1);
    rt.fund(&b, 1);

    rt.open_channel(&a, &b, 1_000_000, 0);
    rt.open_channel(&b, &c, 1_000_000, 0);

    let amount_msat = 50_000_000;
    // C's invoice needs a route hint carrying B's forwarding fees, which C learns from B's
    // channel_update shortly after the channel is ready.
    let mut inv = c.create_invoice(Some(amount_msat), "routed", 3600).unwrap();
    wait_until(T, "C knows B's forwarding fees", || {
        let has_fees = |i: &lightkeeper::Bolt11Invoice| {
            i.route_hints()
                .iter()
                .any(|h| h.0.iter().any(|hop| hop.fees.base_msat == 1_000))
        };
        if !has_fees(&inv) {
            inv = c.create_invoice(Some(amount_msat), "routed", 3600).unwrap();
        }
        has_fees(&inv)
    });
    let hash = a.pay_invoice(&inv.to_string(), None, None).unwrap();
    let fee = match expect_event(&a, T, |e| {
        matches!(
            e,
            Event::PaymentSuccessful { .. } | Event::PaymentFailed { .. }
        )
    }) {
        Event::PaymentSuccessful {
            payment_hash,
            fee_paid_msat,
            amount_msat: sent,
            ..
        } => {
            assert_eq!(payment_hash, hash);
            assert_eq!(
                sent,
                Some(amount_msat),
                "the recipient's amount, fees excluded"
            );
            fee_paid_msat.unwrap()
        }
        other => panic!("payment failed: {other:?}"),
    };
    let expected_fee = 1_000 + amount_msat * 100 / 1_000_000;
    assert_eq!(fee, expected_fee, "B's base + proportional fee");
    expect_event(
        &c,
        T,
        |e| matches!(e, Event::PaymentReceived { amount_msat: m, .. } if *m == amount_msat),
    );
    match expect_event(&b, T, |e| matches!(e, Event::PaymentForwarded { .. })) {
        Event::PaymentForwarded {
            fee_earned_msat,
            outbound_amount_msat,
        } => {
            assert_eq!(fee_earned_msat, Some(expected_fee));
            assert_eq!(outbound_amount_msat, Some(amount_msat));
        }
        _ => unreachable!(),
    }
    // B classified the HTLC as a forward (batched); C received without any batching delay.
    assert!(b.forwarding_batch_active());
    assert!(!c.forwarding_batch_active() && !a.forwarding_batch_active());
    let rec = a.payment(&hash).unwrap().unwrap();
    assert_eq!(rec.fee_msat, Some(expected_fee));
    // Balances moved through B: A lost amount + fee, C gained amount.
    wait_until(T, "C's balance", || {
        c.list_channels()
            .iter()
            .map(|ch| ch.outbound_capacity_msat + ch.inbound_capacity_msat)
            .sum::<u64>()
            > 0
            && c.list_channels()[0].local_balance_msat >= amount_msat
    });
    for n in [&a, &b, &c] {
        n.stop().unwrap();
    }
}
