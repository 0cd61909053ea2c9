//! CLI tests: `merchant` commands against a running regtest instance, exit codes checked.

#[path = "../examples/merchant/cli.rs"]
#[allow(dead_code)]
mod cli;
#[path = "../examples/merchant/regtest.rs"]
mod regtest;

use lightkeeper::api::app::App;

struct Run {
    code: i32,
    out: String,
    err: String,
}

async fn merchant(args: &[&str]) -> Run {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(
        args.iter().map(|s| s.to_string()).collect(),
        &mut out,
        &mut err,
    )
    .await;
    Run {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_commands_against_regtest_instance() {
    let world =
        tokio::task::spawn_blocking(|| regtest::start(500_000, &|m| eprintln!("[setup] {m}")))
            .await
            .unwrap();
    let app = App::start(world.merchant.clone(), regtest::test_config())
        .await
        .unwrap();
    let url = app.url();
    let token = app.admin_token.clone().unwrap();
    let base = ["--url", url.as_str(), "--token", token.as_str()];
    let run = |extra: &[&str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let go = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        merchant(&refs).await
    };

    // status
    let r = go(run(&["status"])).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains("1 active / 1 total, 500000 sat capacity"),
        "{}",
        r.out
    );
    assert!(r.out.contains(&world.merchant.node_id().to_string()));
    let r = go(run(&["--json", "status"])).await;
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v["network"], "regtest");

    // invoice create (sats and fiat)
    let r = go(run(&[
        "invoice",
        "create",
        "--numero",
        "CLI-1",
        "--sats",
        "1500",
        "--description",
        "cli test",
    ]))
    .await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains("CLI-1") && r.out.contains("pending") && r.out.contains("1500 sat"),
        "{}",
        r.out
    );
    let r = go(run(&[
        "invoice",
        "create",
        "--numero",
        "CLI-2",
        "--amount",
        "12.50",
        "--currency",
        "EUR",
        "--expiry-hours",
        "48",
    ]))
    .await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains("12.50 EUR at 60000 EUR/BTC (fallback)"),
        "{}",
        r.out
    );
    let r = go(run(&["--json", "invoice", "create", "--sats", "700"])).await;
    assert_eq!(r.code, 0);
    let created: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert!(created["bolt11"].as_str().unwrap().starts_with("lnbcrt"));

    // invoice list / status
    let r = go(run(&["invoice", "list"])).await;
    assert_eq!(r.code, 0);
    assert!(r.out.starts_with("ID"), "{}", r.out);
    assert!(
        r.out.contains("CLI-1") && r.out.contains("CLI-2"),
        "{}",
        r.out
    );
    let r = go(run(&["--json", "invoice", "list", "--status", "pending"])).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let r = go(run(&["invoice", "status", "CLI-1"])).await;
    assert_eq!(r.code, 0);
    assert!(
        r.out.contains("status") && r.out.contains("pending"),
        "{}",
        r.out
    );

    // invoice cancel, then errors with their exit codes
    let r = go(run(&["invoice", "cancel", "CLI-1"])).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("cancelled"), "{}", r.out);
    let r = go(run(&["invoice", "cancel", "CLI-1"])).await;
    assert_eq!(r.code, 0, "cancelling again is idempotent: {}", r.err);
    assert!(r.out.contains("cancelled"), "{}", r.out);
    let r = go(run(&["invoice", "status", "NOPE"])).await;
    assert_eq!(r.code, 5);
    assert!(
        r.err
            .contains("no invoice with id, number or payment hash NOPE"),
        "{}",
        r.err
    );
    let r = go(run(&["invoice", "create", "--amount", "5"])).await;
    assert_eq!(r.code, 2, "{}", r.err);
    let r = go(run(&["invoice", "create", "--sats", "lots"])).await;
    assert_eq!(r.code, 2);
    let r = go(run(&["invoice", "frobnicate"])).await;
    assert_eq!(r.code, 2);
    let r = merchant(&["--url", &url, "status"]).await;
    assert_eq!(r.code, 4, "no token");
    assert!(r.err.contains("--token"), "{}", r.err);
    let r = merchant(&["--url", &url, "--token", "lk_wrong", "invoice", "list"]).await;
    assert_eq!(r.code, 4);
    let r = merchant(&["--url", "http://127.0.0.1:9", "--token", "x", "status"]).await;
    assert_eq!(r.code, 3);
    assert!(r.err.contains("cannot reach"), "{}", r.err);

    // The customer pays CLI-2; the CLI shows it paid.
    let (_, inv) = {
        let r = go(run(&["--json", "invoice", "status", "CLI-2"])).await;
        (
            (),
            serde_json::from_str::<serde_json::Value>(&r.out).unwrap(),
        )
    };
    let b11 = inv["bolt11"].as_str().unwrap().to_string();
    let cust = world.customer.clone();
    tokio::task::spawn_blocking(move || cust.pay_invoice(&b11, None, None).unwrap())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = go(run(&["invoice", "status", "CLI-2"])).await;
        if r.out.contains("paid ")
            || r.out
                .lines()
                .any(|l| l.starts_with("status") && l.ends_with("paid"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.out);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Other read commands work.
    for cmd in [
        &["channels"][..],
        &["liquidity", "status"],
        &["payments", "list"],
        &["peers"],
        &["onchain", "balance"],
        &["webhook", "list"],
        &["events"],
        &["token", "list"],
    ] {
        let r = go(run(cmd)).await;
        assert_eq!(r.code, 0, "{cmd:?}: {}", r.err);
    }
    let r = go(run(&["liquidity", "status"])).await;
    assert!(r.out.contains("TOTAL"), "{}", r.out);

    // config show masks secrets (runs locally).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("merchant.toml");
    std::fs::write(
        &file,
        "[rates]\ncoingecko_api_key = \"CG-secret-key\"\n[webhooks]\nsecret = \"whsec_c2VjcmV0\"\n",
    )
    .unwrap();
    let r = merchant(&["config", "show", "--config", file.to_str().unwrap()]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        !r.out.contains("CG-secret-key") && !r.out.contains("whsec_c2VjcmV0"),
        "{}",
        r.out
    );
    assert!(
        r.out.contains("coingecko_api_key = \"********\""),
        "{}",
        r.out
    );
    std::fs::write(&file, "[invoices]\nmin_expiry_secs = 0\n").unwrap();
    let r = merchant(&["config", "show", "--config", file.to_str().unwrap()]).await;
    assert_eq!(r.code, 2);
    assert!(r.err.contains("invoices.min_expiry_secs"), "{}", r.err);

    app.stop().await;
    tokio::task::spawn_blocking(move || world.stop())
        .await
        .unwrap();
}
