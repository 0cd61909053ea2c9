//! The merchant binary: `cargo run --example merchant`.
//!
//! * No arguments: a regtest demo on an offline machine — bitcoind, a merchant node and a
//!   customer node with a funded channel, the REST API and dashboard on 127.0.0.1, an admin
//!   token printed once, a scripted fiat invoice paid by the customer with the webhook shown
//!   by a built-in loopback receiver — then it serves until Ctrl-C.
//! * `--network bitcoin|testnet|signet|regtest` with `--esplora URL` or
//!   `--bitcoind-rpc host:port:user:pass` (or a `--config` file): runs the node for real, no demo.
//! * `merchant <command> ...` (`status`, `invoice create`, ...): the CLI, talking to a running
//!   node's API. See `merchant help` and docs/merchant-binary.md.

mod cli;
mod regtest;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lightkeeper::api::app::App;
use lightkeeper::api::config::{AppConfig, ChainChoice};
use lightkeeper::Builder;

const SERVER_USAGE: &str = "\
usage: merchant [serve] [--config FILE] [--network bitcoin|testnet|signet|regtest]
                [--esplora URL | --bitcoind-rpc HOST:PORT:USER:PASS] [--data-dir DIR]
                [--api-listen IP:PORT] [--exit-after-demo]
       merchant help        (CLI commands)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let first_cmd = args.iter().find(|a| !a.starts_with("--")).cloned();
    let is_cli = first_cmd
        .as_deref()
        .is_some_and(|c| cli::COMMANDS.contains(&c))
        && !args
            .iter()
            .any(|a| a == "--network" || a == "--esplora" || a == "--bitcoind-rpc");
    let code = if is_cli {
        let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
        rt.block_on(cli::run(args, &mut out, &mut err))
    } else {
        match rt.block_on(serve(args)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        }
    };
    rt.shutdown_timeout(Duration::from_secs(5));
    std::process::exit(code);
}

struct ServeArgs {
    config: AppConfig,
    exit_after_demo: bool,
}

fn parse_serve_args(mut args: Vec<String>) -> Result<ServeArgs, String> {
    if args.first().map(String::as_str) == Some("serve") {
        args.remove(0);
    }
    let mut config_path = None;
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut exit_after_demo = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].clone();
        let mut value = || -> Result<String, String> {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n{SERVER_USAGE}"))
        };
        match a.as_str() {
            "--config" => config_path = Some(value()?),
            "--network" => overrides.push(("LIGHTKEEPER_NODE_NETWORK".into(), value()?)),
            "--esplora" => overrides.push(("LIGHTKEEPER_CHAIN_ESPLORA_URL".into(), value()?)),
            "--bitcoind-rpc" => overrides.push(("LIGHTKEEPER_CHAIN_BITCOIND_RPC".into(), value()?)),
            "--data-dir" => overrides.push(("LIGHTKEEPER_NODE_DATA_DIR".into(), value()?)),
            "--api-listen" => overrides.push(("LIGHTKEEPER_API_LISTEN".into(), value()?)),
            "--exit-after-demo" => exit_after_demo = true,
            "-h" | "--help" => return Err(SERVER_USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{SERVER_USAGE}")),
        }
        i += 1;
    }
    // Command-line flags win over the environment, which wins over the file.
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .collect();
    env.extend(overrides);
    let config = AppConfig::load(config_path.as_deref().map(std::path::Path::new), env)
        .map_err(|e| e.to_string())?;
    Ok(ServeArgs {
        config,
        exit_after_demo,
    })
}

async fn serve(args: Vec<String>) -> Result<(), String> {
    let a = parse_serve_args(args)?;
    let config = a.config;
    let network = config.network().map_err(|e| e.to_string())?;
    match config.chain_choice().map_err(|e| e.to_string())? {
        ChainChoice::None if network == lightkeeper::Network::Regtest => {
            demo(config, a.exit_after_demo).await
        }
        ChainChoice::None => Err(format!(
            "network {network} needs a chain source: pass --esplora URL or --bitcoind-rpc HOST:PORT:USER:PASS (or set [chain] in the config)"
        )),
        chain => run_real(config, chain).await,
    }
}

async fn wait_for_ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn print_access(app: &App) {
    println!("REST API and dashboard: {}", app.url());
    match &app.admin_token {
        Some(t) => {
            println!("admin API token (shown once, stored hashed): {t}");
            println!("dashboard: {}/#token={t}", app.url());
            println!(
                "CLI:       cargo run --example merchant -- --url {} --token {t} status",
                app.url()
            );
        }
        None => println!("(API tokens exist already; create more with `merchant token create`)"),
    }
}

async fn run_real(config: AppConfig, chain: ChainChoice) -> Result<(), String> {
    let network = config.network().map_err(|e| e.to_string())?;
    let mut b = Builder::new()
        .network(network)
        .storage_dir(config.data_dir())
        .alias(config.node.alias.clone());
    if let Some(addr) = config.listen_address().map_err(|e| e.to_string())? {
        b = b.listening_address(addr);
    }
    b = match chain {
        ChainChoice::Esplora(url) => b.chain_source_esplora(url),
        ChainChoice::BitcoindRpc {
            host,
            port,
            user,
            password,
        } => b.chain_source_bitcoind_rpc(host, port, user, password),
        ChainChoice::None => unreachable!("checked by the caller"),
    };
    println!(
        "starting the {network} node in {}",
        config.data_dir().display()
    );
    let node = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let node = b
            .build()
            .map_err(|e| format!("cannot build the node: {e}"))?;
        node.start()
            .map_err(|e| format!("cannot start the node: {e}"))?;
        Ok(Arc::new(node))
    })
    .await
    .map_err(|e| e.to_string())??;
    println!("node {} on {network}", node.node_id());
    let app = App::start(node.clone(), config).await?;
    print_access(&app);
    println!("serving; Ctrl-C stops");
    wait_for_ctrl_c().await;
    println!("shutting down");
    app.stop().await;
    tokio::task::spawn_blocking(move || node.stop())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    println!("stopped cleanly");
    Ok(())
}

/// A loopback webhook receiver that verifies signatures and reports each delivery.
async fn webhook_receiver() -> (
    String,
    Arc<std::sync::Mutex<Option<String>>>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::sync::oneshot::Sender<()>,
) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let secret: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let s2 = secret.clone();
    let handler = move |headers: HeaderMap, body: Bytes| {
        let (secret, tx) = (s2.clone(), tx.clone());
        async move {
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
                .collect();
            let Ok(h) = lightkeeper::webhook::WebhookHeaders::from_pairs(pairs.iter().copied())
            else {
                return StatusCode::BAD_REQUEST;
            };
            let key = secret.lock().unwrap().clone().unwrap_or_default();
            let verified = lightkeeper::webhook::verify(
                &key,
                &h,
                &body,
                lightkeeper::webhook::DEFAULT_TOLERANCE,
                std::time::SystemTime::now(),
            )
            .is_ok();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let _ = tx.send(format!(
                "webhook received: {} for {} ({} sat), webhook-id {}, signature {}",
                v["event"].as_str().unwrap_or("?"),
                v["invoice_id"].as_str().unwrap_or("-"),
                v["amount_sats"],
                h.id,
                if verified { "verified" } else { "INVALID" }
            ));
            if verified {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            }
        }
    };
    let app = axum::Router::new().route("/hooks", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    (url, secret, rx, stop_tx)
}

async fn demo(mut config: AppConfig, exit_after_demo: bool) -> Result<(), String> {
    let t0 = Instant::now();
    let step = move |what: &str| println!("[{:>7.3} s] {what}", t0.elapsed().as_secs_f64());
    let world = tokio::task::spawn_blocking(move || {
        regtest::start(1_000_000, &|m| {
            println!("[{:>7.3} s] {m}", t0.elapsed().as_secs_f64())
        })
    })
    .await
    .map_err(|e| format!("regtest set-up failed: {e}"))?;

    // Offline-friendly rates: CoinGecko is asked (briefly) and the fixed fallback answers when
    // it cannot be reached.
    if config.rates.fallback.is_empty() {
        config.rates.fallback.insert("EUR".into(), "60000".into());
        config.rates.fallback.insert("USD".into(), "65000".into());
    }
    config.rates.request_timeout_secs = config.rates.request_timeout_secs.min(3);
    let (hook_url, hook_secret, mut hooks, stop_receiver) = webhook_receiver().await;
    config.webhooks.url = hook_url.clone();

    let app = match App::start(world.merchant.clone(), config.clone()).await {
        Ok(app) => app,
        Err(e) if e.starts_with("cannot listen") => {
            step(&format!("{e}; using a free port instead"));
            config.api.listen = "127.0.0.1:0".into();
            App::start(world.merchant.clone(), config).await?
        }
        Err(e) => return Err(e),
    };
    if let Some((_, secret)) = &app.configured_webhook {
        *hook_secret.lock().unwrap() = Some(secret.clone());
    }
    step(&format!(
        "webhook endpoint registered: {hook_url} (loopback receiver, verifies signatures)"
    ));
    print_access(&app);

    let result = run_demo_script(&app, &world, &mut hooks, &step).await;
    if let Err(e) = &result {
        step(&format!("demo step failed: {e}"));
    }
    if !exit_after_demo {
        println!("\nserving the dashboard and API; Ctrl-C stops");
        tokio::select! {
            _ = wait_for_ctrl_c() => {}
            _ = async { while let Some(m) = hooks.recv().await { step(&m) } std::future::pending::<()>().await } => {}
        }
    }
    step("shutting down");
    app.stop().await;
    let _ = stop_receiver.send(());
    tokio::task::spawn_blocking(move || {
        world.stop();
        drop(world);
    })
    .await
    .map_err(|e| e.to_string())?;
    step("stopped cleanly");
    result
}

async fn run_demo_script(
    app: &App,
    world: &regtest::RegtestWorld,
    hooks: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    step: &dyn Fn(&str),
) -> Result<(), String> {
    let token = app.admin_token.clone().unwrap_or_default();
    let http = reqwest::Client::new();
    let url = app.url();
    step("demo: POST /v1/invoices {numero: INV-001, amount: 25.00 EUR, description: Espresso x2}");
    let res = http
        .post(format!("{url}/v1/invoices"))
        .bearer_auth(&token)
        .json(
            &serde_json::json!({"numero": "INV-001", "amount": "25.00", "currency": "EUR",
                                  "description": "Espresso x2", "metadata": {"table": 7}}),
        )
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let inv: serde_json::Value = res.json().await.map_err(|e| e.to_string())?;
    if inv["bolt11"].as_str().is_none() {
        return Err(format!("invoice not created: {inv}"));
    }
    let source = inv["rate_source"].as_str().unwrap_or("?");
    step(&format!(
        "invoice {} for {} {} = {} sat at {} EUR/BTC (rate source: {source}{})",
        inv["id"].as_str().unwrap_or("?"),
        inv["amount_fiat"].as_str().unwrap_or("?"),
        inv["currency"].as_str().unwrap_or("?"),
        inv["amount_sats"],
        inv["exchange_rate"].as_str().unwrap_or("?"),
        if source == "fallback" {
            "; the rate providers are unreachable offline, so this is the fixed fallback rate from [rates] fallback"
        } else {
            ""
        }
    ));
    step(&format!(
        "BOLT11: {}",
        inv["bolt11"].as_str().unwrap_or_default()
    ));
    let bolt11 = inv["bolt11"].as_str().unwrap_or_default().to_string();
    let customer = world.customer.clone();
    let paid_at = Instant::now();
    tokio::task::spawn_blocking(move || customer.pay_invoice(&bolt11, None, None))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("customer payment failed: {e}"))?;
    step("customer node pays the invoice");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value = http
            .get(format!("{url}/v1/invoices/INV-001"))
            .bearer_auth(&token)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if v["status"] == "paid" {
            step(&format!(
                "invoice INV-001 is paid: {} msat received, {:.1} ms after the customer paid",
                v["received_msat"],
                paid_at.elapsed().as_secs_f64() * 1e3
            ));
            break;
        }
        if Instant::now() > deadline {
            return Err("the invoice was not paid within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, hooks.recv()).await {
            Ok(Some(m)) => {
                step(&m);
                if m.contains("payment_received") {
                    break;
                }
            }
            _ => return Err("no payment_received webhook within 30 s".into()),
        }
    }
    step("demo done: try `merchant status`, `merchant invoice list` or the dashboard");
    Ok(())
}
