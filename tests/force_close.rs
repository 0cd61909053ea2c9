//! Force close on real regtest: the counterparty's balance is swept at once, ours after the
//! CSV delay, both back into the on-chain wallets.

use std::time::Duration;

use lightkeeper::Event;
use lightkeeper_harness::{expect_event, tempdir, wait_until, Regtest};

const T: Duration = Duration::from_secs(30);

#[test]
fn force_close_sweeps_both_sides_after_csv() {
    let rt = Regtest::start();
    let (da, db) = (tempdir(), tempdir());
    let a = rt.node(da.path());
    let b = rt.node(db.path());
    rt.fund(&a, 1);
    rt.fund(&b, 1);
    let capacity = 1_000_000;
    let chan = rt.open_channel(&a, &b, capacity, 0);
    a.sync_wallets().unwrap();
    let a_after_open = a.onchain_balance().confirmed_sat;
    let b_before = b.onchain_balance().confirmed_sat;

    let pushed = 200_000;
    let inv = b
        .create_invoice(Some(pushed * 1000), "before close", 3600)
        .unwrap();
    a.pay_invoice(&inv.to_string(), None, None).unwrap();
    expect_event(&a, T, |e| matches!(e, Event::PaymentSuccessful { .. }));
    expect_event(&b, T, |e| matches!(e, Event::PaymentReceived { .. }));
    wait_until(T, "HTLC settled in both commitments", || {
        a.list_channels()
            .first()
            .is_some_and(|c| c.outbound_capacity_msat < (capacity - pushed) * 1000)
            && b.list_channels()
                .first()
                .is_some_and(|c| c.outbound_capacity_msat > 0)
    });

    a.force_close_channel(chan, "test").unwrap();
    expect_event(&a, T, |e| matches!(e, Event::ChannelClosed { .. }));
    wait_until(T, "commitment in mempool", || {
        rt.rpc("getrawmempool", &[])
            .as_array()
            .is_some_and(|m| !m.is_empty())
    });
    rt.mine_and_sync(1, &[&a, &b]);
    expect_event(&b, T, |e| matches!(e, Event::ChannelClosed { .. }));

    // B's to_remote (CSV 1 with anchors) is swept by B's sweeper into its wallet. B pays the
    // sweep fee and, when it also bumped a commitment through its anchor (timing-dependent),
    // that CPFP fee too: allow 20,000 sat of fees in all, as for A.
    wait_until(Duration::from_secs(60), "B swept its balance", || {
        rt.mine_and_sync(1, &[&a, &b]);
        b.onchain_balance().confirmed_sat > b_before + pushed - 20_000
    });
    let b_gain = b.onchain_balance().confirmed_sat - b_before;
    assert!(
        b_gain <= pushed && b_gain > pushed - 20_000,
        "B recovered {b_gain} of {pushed} sat"
    );

    // A's to_local waits for the CSV delay (144 blocks), then is swept.
    rt.mine_and_sync(144, &[&a, &b]);
    let a_local = capacity - pushed;
    wait_until(
        Duration::from_secs(60),
        "A swept its balance after CSV",
        || {
            rt.mine_and_sync(1, &[&a, &b]);
            a.onchain_balance().confirmed_sat > a_after_open + a_local - 20_000
        },
    );
    let a_gain = a.onchain_balance().confirmed_sat - a_after_open;
    assert!(
        a_gain < a_local,
        "A paid commitment/sweep fees: got {a_gain} of {a_local}"
    );
    eprintln!("recovered on-chain: A {a_gain} of {a_local} sat, B {b_gain} of {pushed} sat");
    a.stop().unwrap();
    b.stop().unwrap();
}
