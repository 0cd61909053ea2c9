//! Two nodes on real regtest: fund, open, pay both ways, open-amount invoice, keysend,
//! invalid inputs, restart mid-life, cooperative close with balances reconciled to the sat.

use std::time::Duration;

use lightkeeper::{Error, Event, PaymentDirection, PaymentHash, PaymentStatus};
use lightkeeper_harness::{
    channel, expect_event, tempdir, wait_htlcs_settled, wait_until, Regtest,
};

const T: Duration = Duration::from_secs(30);

fn pay(
    payer: &lightkeeper::Node,
    payee: &lightkeeper::Node,
    invoice: &str,
    amount: Option<u64>,
) -> (PaymentHash, Option<u64>) {
    let hash = payer
        .pay_invoice(invoice, amount, None)
        .expect("pay_invoice");
    let fee = match expect_event(payer, T, |e| {
        matches!(
            e,
            Event::PaymentSuccessful { .. } | Event::PaymentFailed { .. }
        )
    }) {
        Event::PaymentSuccessful {
            payment_hash,
            fee_paid_msat,
            ..
        } => {
            assert_eq!(payment_hash, hash);
            fee_paid_msat
        }
        other => panic!("payment failed: {other:?}"),
    };
    match expect_event(payee, T, |e| matches!(e, Event::PaymentReceived { .. })) {
        Event::PaymentReceived { payment_hash, .. } => assert_eq!(payment_hash, hash),
        _ => unreachable!(),
    }
    (hash, fee)
}

#[test]
fn two_nodes_pay_restart_and_cooperative_close() {
    let rt = Regtest::start();
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let a = rt.node(dir_a.path());
    let mut b = rt.node(dir_b.path());
    rt.fund(&a, 1);
    rt.fund(&b, 1);
    let b_onchain_before = b.onchain_balance().confirmed_sat;

    let capacity = 1_000_000;
    let chan = rt.open_channel(&a, &b, capacity, 0);
    let a_onchain_after_open = {
        a.sync_wallets().unwrap();
        a.onchain_balance().confirmed_sat + a.onchain_balance().unconfirmed_sat
    };

    // A -> B, fixed amount.
    let inv = b.create_invoice(Some(100_000_000), "coffee", 3600).unwrap();
    let (h1, fee1) = pay(&a, &b, &inv.to_string(), None);
    assert_eq!(fee1, Some(0), "direct channel: no routing fee");
    let rec = a.payment(&h1).unwrap().unwrap();
    assert_eq!(rec.status, PaymentStatus::Succeeded);
    assert_eq!(rec.direction, PaymentDirection::Outbound);
    assert!(rec.preimage.is_some());
    let rec_b = b.payment(&h1).unwrap().unwrap();
    assert_eq!(
        (rec_b.status, rec_b.amount_msat),
        (PaymentStatus::Succeeded, Some(100_000_000))
    );

    // B -> A, once the claim's commitment dance has settled B's new balance.
    wait_until(T, "B can send", || {
        b.list_channels()
            .iter()
            .any(|c| c.outbound_capacity_msat >= 30_000_000)
    });
    let inv = a.create_invoice(Some(30_000_000), "refund", 3600).unwrap();
    pay(&b, &a, &inv.to_string(), None);

    // Open amount, payer chooses.
    let inv = b.create_invoice(None, "tip jar", 3600).unwrap();
    assert!(matches!(
        a.pay_invoice(&inv.to_string(), None, None),
        Err(Error::InvalidAmount(_))
    ));
    let (h3, _) = pay(&a, &b, &inv.to_string(), Some(7_000_000));
    assert_eq!(
        b.payment(&h3).unwrap().unwrap().amount_msat,
        Some(7_000_000)
    );

    // Keysend.
    let h4 = a.keysend(&b.node_id().to_string(), 3_000_000).unwrap();
    expect_event(
        &a,
        T,
        |e| matches!(e, Event::PaymentSuccessful { payment_hash, .. } if *payment_hash == h4),
    );
    expect_event(
        &b,
        T,
        |e| matches!(e, Event::PaymentReceived { payment_hash, amount_msat: 3_000_000 } if *payment_hash == h4),
    );

    // Invalid inputs give typed errors.
    assert!(matches!(
        a.pay_invoice("lnbcrt1notaninvoice", None, None),
        Err(Error::InvalidInvoice(_))
    ));
    assert!(matches!(
        b.create_invoice(Some(0), "zero", 60),
        Err(Error::InvalidAmount(_))
    ));
    assert!(matches!(
        a.keysend(&b.node_id().to_string(), 0),
        Err(Error::InvalidAmount(_))
    ));
    assert!(matches!(a.close_channel(42), Err(Error::UnknownChannel(_))));
    assert!(matches!(
        a.keysend("not-a-key", 1000),
        Err(Error::InvalidNodeId(_))
    ));
    let addr = b.new_onchain_address().unwrap().to_string();
    assert!(matches!(
        a.send_onchain(&addr, Some(21_000_000 * 100_000_000), None),
        Err(Error::InsufficientFunds { .. })
    ));
    assert!(matches!(
        a.send_onchain("bc1qnotanaddress", Some(1000), None),
        Err(Error::InvalidAddress(_))
    ));
    let own = a.create_invoice(Some(1_000), "self", 60).unwrap();
    assert!(matches!(
        a.pay_invoice(&own.to_string(), None, None),
        Err(Error::PaymentSending(_))
    ));
    let inv = b.create_invoice(Some(1_000_000), "once", 3600).unwrap();
    pay(&a, &b, &inv.to_string(), None);
    assert!(matches!(
        a.pay_invoice(&inv.to_string(), None, None),
        Err(Error::DuplicatePayment(_))
    ));

    // Restart B from its directory: channel, balances and history survive.
    let b_channel_before = channel(&b, chan).is_none();
    assert!(b_channel_before, "B's user_channel_id differs from A's");
    // A's success can precede the end of the commitment update that moves B's balance.
    wait_htlcs_settled(&[&a, &b], T);
    let b_chans = b.list_channels();
    let b_payments = b.list_payments().unwrap();
    let b_addr = b.listening_addresses();
    b.stop().unwrap();
    drop(b);
    b = rt
        .builder(dir_b.path())
        .listening_addresses(b_addr)
        .build()
        .unwrap();
    b.start().unwrap();
    assert_eq!(b.list_payments().unwrap(), b_payments);
    let after: Vec<_> = b
        .list_channels()
        .into_iter()
        .map(|c| (c.channel_id, c.local_balance_msat))
        .collect();
    let before: Vec<_> = b_chans
        .into_iter()
        .map(|c| (c.channel_id, c.local_balance_msat))
        .collect();
    assert_eq!(after, before);
    wait_until(T, "channel usable after restart", || {
        channel(&a, chan).is_some_and(|c| c.is_usable)
    });
    let inv = b
        .create_invoice(Some(2_000_000), "after restart", 3600)
        .unwrap();
    pay(&a, &b, &inv.to_string(), None);

    // Cooperative close: each side gets its balance, the funder pays the closing fee.
    let a_local_msat: u64 =
        capacity * 1000 - 100_000_000 + 30_000_000 - 7_000_000 - 3_000_000 - 1_000_000 - 2_000_000;
    let b_local_msat = capacity * 1000 - a_local_msat;
    a.close_channel(chan).unwrap();
    expect_event(&a, T, |e| matches!(e, Event::ChannelClosed { .. }));
    expect_event(&b, T, |e| matches!(e, Event::ChannelClosed { .. }));
    let mut closing_tx = None;
    wait_until(T, "closing tx in mempool", || {
        let pool = rt.rpc("getrawmempool", &[]);
        if let Some(txid) = pool
            .as_array()
            .and_then(|a| a.first())
            .and_then(|t| t.as_str())
        {
            let hex = rt.rpc("getrawtransaction", &[txid.into()]);
            let bytes: Vec<u8> = bitcoin::hex::FromHex::from_hex(hex.as_str().unwrap()).unwrap();
            closing_tx =
                Some(bitcoin::consensus::deserialize::<bitcoin::Transaction>(&bytes).unwrap());
            true
        } else {
            false
        }
    });
    let closing_tx = closing_tx.unwrap();
    let out_sum: u64 = closing_tx.output.iter().map(|o| o.value.to_sat()).sum();
    let close_fee = capacity - out_sum;
    assert!(
        close_fee > 0 && close_fee < 5_000,
        "closing fee {close_fee}"
    );
    rt.mine_and_sync(1, &[&a, &b]);
    wait_until(T, "close outputs in wallets", || {
        a.sync_wallets().unwrap();
        b.sync_wallets().unwrap();
        a.onchain_balance().confirmed_sat == a_onchain_after_open + a_local_msat / 1000 - close_fee
            && b.onchain_balance().confirmed_sat == b_onchain_before + b_local_msat / 1000
    });
    assert!(a.list_channels().is_empty() && b.list_channels().is_empty());
    // start() and stop() are idempotent.
    a.start().unwrap();
    assert!(a.is_running());
    a.stop().unwrap();
    a.stop().unwrap();
    assert!(!a.is_running());
    assert!(matches!(a.sync_wallets(), Err(Error::NotRunning)));
    b.stop().unwrap();
}

/// Stopping a node in the middle of a payment's commitment dance must not leave its channel
/// manager older than its monitors (LDK would force-close the channel on the next start).
#[test]
fn stop_mid_payment_then_restart_keeps_the_channel() {
    let rt = Regtest::start();
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let a = rt.node(dir_a.path());
    let mut b = rt.node(dir_b.path());
    rt.fund(&a, 1);
    let chan = rt.open_channel(&a, &b, 500_000, 0);
    for i in 0..3 {
        let inv = b
            .create_invoice(Some(5_000_000), &format!("stop {i}"), 3600)
            .unwrap();
        let hash = a.pay_invoice(&inv.to_string(), None, None).unwrap();
        // Stop B as soon as it has the payment: the fulfill's commitment round trip may
        // still be in flight.
        expect_event(
            &b,
            T,
            |e| matches!(e, Event::PaymentReceived { payment_hash, .. } if *payment_hash == hash),
        );
        let addr = b.listening_addresses();
        b.stop().unwrap();
        drop(b);
        b = rt
            .builder(dir_b.path())
            .listening_addresses(addr)
            .build()
            .unwrap();
        b.start().unwrap();
        wait_until(T, "channel usable again", || {
            channel(&a, chan).is_some_and(|c| c.is_usable)
        });
        assert_eq!(b.list_channels().len(), 1, "B still has the channel");
        expect_event(
            &a,
            T,
            |e| matches!(e, Event::PaymentSuccessful { payment_hash, .. } if *payment_hash == hash),
        );
    }
    while let Some(e) = b.next_event() {
        assert!(
            !matches!(e, Event::ChannelClosed { .. }),
            "channel was closed: {e:?}"
        );
        b.event_handled().unwrap();
    }
    a.stop().unwrap();
    b.stop().unwrap();
}
