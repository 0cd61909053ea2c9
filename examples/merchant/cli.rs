//! The `merchant` command line: talks to a running node's REST API (`--url`, `--token`, or
//! `LIGHTKEEPER_URL` / `LIGHTKEEPER_TOKEN`). Tables by default, `--json` for scripts.
//!
//! Exit codes: 0 success, 1 the API refused the request, 2 usage error, 3 node unreachable,
//! 4 authentication or permission error, 5 not found.

use std::io::Write;

use serde_json::{json, Value};

/// Commands the CLI handles (anything else starts the server).
pub const COMMANDS: &[&str] = &[
    "status",
    "channels",
    "invoice",
    "payments",
    "liquidity",
    "webhook",
    "peers",
    "pay",
    "onchain",
    "config",
    "token",
    "events",
    "help",
];

pub const USAGE: &str = "\
usage: merchant [--url URL] [--token TOKEN] [--json] COMMAND

commands:
  status                                 node, channels and balances
  channels                               channels with balances
  liquidity status                       inbound/outbound ratio per channel and total
  peers [connect NODE_ID@HOST:PORT]      peers
  invoice create [--numero INV-001] [--amount 500.00 --currency EUR | --sats N]
                 [--description TEXT] [--expiry-hours 48]
  invoice list [--status pending|paid|cancelled|expired] [--limit N]
  invoice status ID
  invoice cancel ID
  payments list [--direction inbound|outbound] [--limit N]
  payments show HASH
  pay BOLT11 [--amount-msat N]
  onchain address | balance | send ADDRESS (AMOUNT_SAT|all) [--fee-rate SAT_PER_VB]
  webhook add URL [--events a,b] [--secret whsec_...] | list | remove ID | test ID | deliveries
  token create NAME read|invoices|admin | list | revoke ID
  events [--after SEQ] [--limit N]
  config show [--config FILE]            effective configuration, secrets masked

environment: LIGHTKEEPER_URL (default http://127.0.0.1:8080), LIGHTKEEPER_TOKEN
exit codes: 0 ok, 1 refused by the API, 2 usage, 3 unreachable, 4 auth, 5 not found";

/// A failure with its exit code.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

fn usage(m: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: format!("{}\n(run `merchant help` for usage)", m.into()),
    }
}

struct Client {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut req = self.http.request(
            method,
            format!("{}{}", self.url.trim_end_matches('/'), path),
        );
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(|e| Failure {
            code: 3,
            message: format!(
                "cannot reach the node's API at {}: {e}\nIs `cargo run --example merchant` running? Set --url or LIGHTKEEPER_URL.",
                self.url
            ),
        })?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(v);
        }
        let msg = v["message"]
            .as_str()
            .unwrap_or("request failed")
            .to_string();
        let code = match status.as_u16() {
            401 | 403 => 4,
            404 => 5,
            _ => 1,
        };
        let hint = if status.as_u16() == 401 {
            "\nPass the API token with --token or LIGHTKEEPER_TOKEN."
        } else {
            ""
        };
        Err(Failure {
            code,
            message: format!(
                "{msg} (HTTP {}, {}){hint}",
                status.as_u16(),
                v["code"].as_str().unwrap_or("error")
            ),
        })
    }
    async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> Result<Value, Failure> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// Column-aligned table.
fn table(out: &mut dyn Write, headers: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let _ = writeln!(
        out,
        "{}",
        line(headers.iter().map(|s| s.to_string()).collect())
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
    if w.is_empty() {
        let _ = writeln!(out);
    }
}

fn kv(out: &mut dyn Write, pairs: Vec<(&str, String)>) {
    let w = pairs.iter().map(|p| p.0.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        let _ = writeln!(out, "{k:<w$}  {v}");
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn sat(msat: &Value) -> String {
    msat.as_u64()
        .map(|m| format!("{} sat", m / 1000))
        .unwrap_or_else(|| "-".into())
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map(|f| format!("{:.0}%", f * 100.0))
        .unwrap_or_default()
}

/// Takes `--name value` out of `args`.
fn opt(args: &mut Vec<String>, name: &str) -> Result<Option<String>, Failure> {
    if let Some(i) = args.iter().position(|a| a == name) {
        if i + 1 >= args.len() {
            return Err(usage(format!("{name} needs a value")));
        }
        let v = args.remove(i + 1);
        args.remove(i);
        return Ok(Some(v));
    }
    let prefix = format!("{name}=");
    if let Some(i) = args.iter().position(|a| a.starts_with(&prefix)) {
        let v = args.remove(i)[prefix.len()..].to_string();
        return Ok(Some(v));
    }
    Ok(None)
}

fn flag(args: &mut Vec<String>, name: &str) -> bool {
    if let Some(i) = args.iter().position(|a| a == name) {
        args.remove(i);
        true
    } else {
        false
    }
}

fn num(v: Option<String>, name: &str) -> Result<Option<u64>, Failure> {
    v.map(|x| {
        x.parse::<u64>()
            .map_err(|_| usage(format!("{name} must be a whole number, got {x:?}")))
    })
    .transpose()
}

fn no_extra(args: &[String]) -> Result<(), Failure> {
    match args.first() {
        Some(a) => Err(usage(format!("unexpected argument {a:?}"))),
        None => Ok(()),
    }
}

fn invoice_rows(list: &Value) -> Vec<Vec<String>> {
    list.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            vec![
                s(&i["id"]),
                s(&i["status"]),
                i["amount_sats"]
                    .as_u64()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "open".into()),
                match (&i["amount_fiat"], &i["currency"]) {
                    (Value::String(a), Value::String(c)) => format!("{a} {c}"),
                    _ => "-".into(),
                },
                s(&i["created_at"]),
                s(&i["description"]),
            ]
        })
        .collect()
}

fn show_invoice(out: &mut dyn Write, i: &Value) {
    kv(
        out,
        vec![
            ("id", s(&i["id"])),
            ("status", s(&i["status"])),
            (
                "amount",
                i["amount_sats"]
                    .as_u64()
                    .map(|a| format!("{a} sat"))
                    .unwrap_or_else(|| "open".into()),
            ),
            (
                "fiat",
                match (&i["amount_fiat"], &i["currency"]) {
                    (Value::String(a), Value::String(c)) => format!(
                        "{a} {c} at {} {c}/BTC ({})",
                        s(&i["exchange_rate"]),
                        s(&i["rate_source"])
                    ),
                    _ => "-".into(),
                },
            ),
            ("description", s(&i["description"])),
            ("payment hash", s(&i["payment_hash"])),
            ("created", s(&i["created_at"])),
            ("expires", s(&i["expires_at"])),
            ("paid", s(&i["paid_at"])),
            ("bolt11", s(&i["bolt11"])),
        ],
    );
}

/// Runs one CLI invocation (`args` without the program name); returns the exit code.
pub async fn run(args: Vec<String>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match run_inner(args, out).await {
        Ok(()) => 0,
        Err(f) => {
            let _ = writeln!(err, "error: {}", f.message);
            f.code
        }
    }
}

async fn run_inner(mut args: Vec<String>, out: &mut dyn Write) -> Result<(), Failure> {
    let json_out = flag(&mut args, "--json");
    let url = opt(&mut args, "--url")?
        .or_else(|| std::env::var("LIGHTKEEPER_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let token = opt(&mut args, "--token")?.or_else(|| std::env::var("LIGHTKEEPER_TOKEN").ok());
    if args.is_empty() {
        return Err(usage("no command given"));
    }
    let cmd = args.remove(0);
    if cmd == "help" || cmd == "--help" {
        let _ = writeln!(out, "{USAGE}");
        return Ok(());
    }
    if cmd == "config" {
        let config = opt(&mut args, "--config")?;
        if args.first().map(String::as_str) != Some("show") {
            return Err(usage("usage: merchant config show [--config FILE]"));
        }
        args.remove(0);
        no_extra(&args)?;
        let c = lightkeeper::api::config::AppConfig::load(
            config.as_deref().map(std::path::Path::new),
            std::env::vars(),
        )
        .map_err(|e| Failure {
            code: 2,
            message: e.to_string(),
        })?;
        if json_out {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&c.to_masked_json()).unwrap_or_default()
            );
        } else {
            let _ = write!(out, "{}", c.to_masked_toml());
        }
        return Ok(());
    }
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| Failure {
                code: 1,
                message: e.to_string(),
            })?,
        url,
        token,
    };
    let sub = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    let print_json = |out: &mut dyn Write, v: &Value| {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_default()
        );
    };
    match (cmd.as_str(), sub.as_str()) {
        ("status", "") => {
            let v = client.get("/v1/status").await?;
            if json_out {
                print_json(out, &v);
            } else {
                let b = &v["balances"];
                kv(
                    out,
                    vec![
                        ("node", s(&v["node_id"])),
                        ("network", s(&v["network"])),
                        (
                            "connection",
                            if v["running"] == true {
                                "running".into()
                            } else {
                                "stopped".into()
                            },
                        ),
                        ("peers connected", s(&v["peers_connected"])),
                        (
                            "channels",
                            format!(
                                "{} active / {} total, {} sat capacity",
                                s(&v["channels"]["active"]),
                                s(&v["channels"]["total"]),
                                s(&v["channels"]["capacity_sat"])
                            ),
                        ),
                        ("local balance", sat(&b["lightning_local_msat"])),
                        ("remote balance", sat(&b["lightning_remote_msat"])),
                        (
                            "on-chain",
                            format!("{} sat", s(&b["onchain_confirmed_sat"])),
                        ),
                    ],
                );
            }
        }
        ("channels", "") => {
            let v = client.get("/v1/channels").await?;
            if json_out {
                print_json(out, &v);
            } else {
                let rows = v
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|c| {
                        vec![
                            s(&c["channel_id"]),
                            s(&c["counterparty"]),
                            format!("{} sat", s(&c["capacity_sat"])),
                            sat(&c["local_balance_msat"]),
                            sat(&c["remote_balance_msat"]),
                            if c["usable"] == true {
                                "usable".into()
                            } else {
                                "not usable".into()
                            },
                        ]
                    })
                    .collect();
                table(
                    out,
                    &["CHANNEL", "PEER", "CAPACITY", "LOCAL", "REMOTE", "STATE"],
                    rows,
                );
            }
        }
        ("liquidity", "status") | ("liquidity", "") => {
            no_extra(&args)?;
            let v = client.get("/v1/liquidity").await?;
            if json_out {
                print_json(out, &v);
            } else {
                let mut rows: Vec<Vec<String>> = v["channels"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|c| {
                        vec![
                            s(&c["channel_id"]),
                            sat(&c["outbound_msat"]),
                            sat(&c["inbound_msat"]),
                            pct(&c["outbound_ratio"]),
                            pct(&c["inbound_ratio"]),
                        ]
                    })
                    .collect();
                rows.push(vec![
                    "TOTAL".into(),
                    sat(&v["total_outbound_msat"]),
                    sat(&v["total_inbound_msat"]),
                    pct(&v["outbound_ratio"]),
                    pct(&v["inbound_ratio"]),
                ]);
                table(
                    out,
                    &["CHANNEL", "OUTBOUND", "INBOUND", "OUT %", "IN %"],
                    rows,
                );
            }
        }
        ("peers", "") | ("peers", "list") => {
            let v = client.get("/v1/peers").await?;
            if json_out {
                print_json(out, &v);
            } else {
                let rows = v
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|p| {
                        vec![
                            s(&p["node_id"]),
                            s(&p["address"]),
                            s(&p["connected"]),
                            s(&p["persisted"]),
                        ]
                    })
                    .collect();
                table(out, &["NODE", "ADDRESS", "CONNECTED", "PERSISTED"], rows);
            }
        }
        ("peers", "connect") => {
            let target = args
                .first()
                .cloned()
                .ok_or_else(|| usage("peers connect NODE_ID@HOST:PORT"))?;
            let (id, addr) = target
                .split_once('@')
                .ok_or_else(|| usage("expected NODE_ID@HOST:PORT"))?;
            let v = client
                .post("/v1/peers", json!({"node_id": id, "address": addr}))
                .await?;
            if json_out {
                print_json(out, &v)
            } else {
                let _ = writeln!(out, "connected to {id}");
            }
        }
        ("invoice", "create") => {
            let mut body = serde_json::Map::new();
            if let Some(n) = opt(&mut args, "--numero")? {
                body.insert("numero".into(), n.into());
            }
            if let Some(a) = opt(&mut args, "--amount")? {
                body.insert("amount".into(), a.into());
            }
            if let Some(c) = opt(&mut args, "--currency")? {
                body.insert("currency".into(), c.into());
            }
            if let Some(n) = num(opt(&mut args, "--sats")?, "--sats")? {
                body.insert("sats".into(), n.into());
            }
            if let Some(d) = opt(&mut args, "--description")? {
                body.insert("description".into(), d.into());
            }
            if let Some(h) = num(opt(&mut args, "--expiry-hours")?, "--expiry-hours")? {
                body.insert("expiry_hours".into(), h.into());
            }
            no_extra(&args)?;
            if body.contains_key("amount") && !body.contains_key("currency") {
                return Err(usage("--amount needs --currency (e.g. --currency EUR)"));
            }
            let v = client.post("/v1/invoices", Value::Object(body)).await?;
            if json_out {
                print_json(out, &v)
            } else {
                show_invoice(out, &v)
            }
        }
        ("invoice", "list") => {
            let mut q = vec![];
            if let Some(st) = opt(&mut args, "--status")? {
                q.push(format!("status={st}"));
            }
            if let Some(l) = num(opt(&mut args, "--limit")?, "--limit")? {
                q.push(format!("limit={l}"));
            }
            no_extra(&args)?;
            let v = client.get(&format!("/v1/invoices?{}", q.join("&"))).await?;
            if json_out {
                print_json(out, &v);
            } else {
                table(
                    out,
                    &["ID", "STATUS", "SATS", "FIAT", "CREATED", "DESCRIPTION"],
                    invoice_rows(&v),
                );
            }
        }
        ("invoice", "status") | ("invoice", "show") | ("invoice", "cancel") => {
            let id = args
                .first()
                .cloned()
                .ok_or_else(|| usage(format!("invoice {sub} ID")))?;
            no_extra(&args[1..])?;
            let path = format!("/v1/invoices/{}", urlencode(&id));
            let v = if sub == "cancel" {
                client.post(&format!("{path}/cancel"), json!({})).await?
            } else {
                client.get(&path).await?
            };
            if json_out {
                print_json(out, &v)
            } else {
                show_invoice(out, &v)
            }
        }
        ("payments", "list") | ("payments", "") => {
            let mut q = vec![];
            if let Some(d) = opt(&mut args, "--direction")? {
                q.push(format!("direction={d}"));
            }
            if let Some(l) = num(opt(&mut args, "--limit")?, "--limit")? {
                q.push(format!("limit={l}"));
            }
            no_extra(&args)?;
            let v = client.get(&format!("/v1/payments?{}", q.join("&"))).await?;
            if json_out {
                print_json(out, &v);
            } else {
                let rows = v
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|p| {
                        vec![
                            s(&p["payment_hash"]),
                            s(&p["direction"]),
                            s(&p["status"]),
                            sat(&p["amount_msat"]),
                            s(&p["kind"]),
                        ]
                    })
                    .collect();
                table(
                    out,
                    &["HASH", "DIRECTION", "STATUS", "AMOUNT", "KIND"],
                    rows,
                );
            }
        }
        ("payments", "show") => {
            let h = args
                .first()
                .cloned()
                .ok_or_else(|| usage("payments show HASH"))?;
            let v = client
                .get(&format!("/v1/payments/{}", urlencode(&h)))
                .await?;
            if json_out {
                print_json(out, &v);
            } else {
                let pairs = [
                    "payment_hash",
                    "direction",
                    "kind",
                    "status",
                    "amount_msat",
                    "fee_msat",
                    "preimage",
                    "failure_reason",
                    "invoice",
                ]
                .iter()
                .map(|k| (*k, s(&v[*k])))
                .collect();
                kv(out, pairs);
            }
        }
        ("pay", invoice) if !invoice.is_empty() => {
            let amount = num(opt(&mut args, "--amount-msat")?, "--amount-msat")?;
            no_extra(&args)?;
            let v = client
                .post(
                    "/v1/payments",
                    json!({"invoice": invoice, "amount_msat": amount}),
                )
                .await?;
            if json_out {
                print_json(out, &v)
            } else {
                let _ = writeln!(out, "payment started: {}", s(&v["payment_hash"]));
            }
        }
        ("onchain", "balance") => {
            let v = client.get("/v1/onchain/balance").await?;
            if json_out {
                print_json(out, &v)
            } else {
                kv(
                    out,
                    vec![
                        ("confirmed", format!("{} sat", s(&v["confirmed_sat"]))),
                        ("unconfirmed", format!("{} sat", s(&v["unconfirmed_sat"]))),
                        ("spendable", format!("{} sat", s(&v["spendable_sat"]))),
                        (
                            "anchor reserve",
                            format!("{} sat", s(&v["anchor_reserve_sat"])),
                        ),
                    ],
                );
            }
        }
        ("onchain", "address") => {
            let v = client.post("/v1/onchain/address", json!({})).await?;
            if json_out {
                print_json(out, &v)
            } else {
                let _ = writeln!(out, "{}", s(&v["address"]));
            }
        }
        ("onchain", "send") => {
            let fee = num(opt(&mut args, "--fee-rate")?, "--fee-rate")?;
            if args.len() != 2 {
                return Err(usage(
                    "onchain send ADDRESS (AMOUNT_SAT|all) [--fee-rate SAT_PER_VB]",
                ));
            }
            let mut body = json!({"address": args[0], "fee_rate_sat_per_vb": fee});
            if args[1] == "all" {
                body["all"] = true.into();
            } else {
                body["amount_sat"] = num(Some(args[1].clone()), "AMOUNT_SAT")?.into();
            }
            let v = client.post("/v1/onchain/send", body).await?;
            if json_out {
                print_json(out, &v)
            } else {
                let _ = writeln!(out, "broadcast {}", s(&v["txid"]));
            }
        }
        ("webhook", "add") => {
            let events = opt(&mut args, "--events")?;
            let secret = opt(&mut args, "--secret")?;
            let url = args
                .first()
                .cloned()
                .ok_or_else(|| usage("webhook add URL"))?;
            no_extra(&args[1..])?;
            let events: Option<Vec<String>> =
                events.map(|e| e.split(',').map(|x| x.trim().to_string()).collect());
            let v = client
                .post(
                    "/v1/webhooks",
                    json!({"url": url, "event_types": events, "secret": secret}),
                )
                .await?;
            if json_out {
                print_json(out, &v)
            } else {
                kv(
                    out,
                    vec![
                        ("id", s(&v["id"])),
                        ("url", s(&v["url"])),
                        ("secret", s(&v["secret"])),
                    ],
                );
                let _ = writeln!(
                    out,
                    "(the secret is shown only now; verify deliveries with it)"
                );
            }
        }
        ("webhook", "list") | ("webhook", "") => {
            let v = client.get("/v1/webhooks").await?;
            if json_out {
                print_json(out, &v)
            } else {
                let rows = v
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|w| {
                        vec![
                            s(&w["id"]),
                            s(&w["url"]),
                            s(&w["enabled"]),
                            w["event_types"]
                                .as_array()
                                .map(|a| {
                                    if a.is_empty() {
                                        "all".to_string()
                                    } else {
                                        a.iter().map(s).collect::<Vec<_>>().join(",")
                                    }
                                })
                                .unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(out, &["ID", "URL", "ENABLED", "EVENTS"], rows);
            }
        }
        ("webhook", "remove") | ("webhook", "test") => {
            let id = args
                .first()
                .cloned()
                .ok_or_else(|| usage(format!("webhook {sub} ID")))?;
            let v = if sub == "remove" {
                client
                    .call(
                        reqwest::Method::DELETE,
                        &format!("/v1/webhooks/{}", urlencode(&id)),
                        None,
                    )
                    .await?
            } else {
                client
                    .post(&format!("/v1/webhooks/{}/test", urlencode(&id)), json!({}))
                    .await?
            };
            if json_out {
                print_json(out, &v)
            } else if sub == "remove" {
                let _ = writeln!(out, "removed webhook {id}");
            } else {
                let _ = writeln!(
                    out,
                    "delivered {} -> HTTP {} in {} ms",
                    s(&v["webhook_id"]),
                    s(&v["status"]),
                    s(&v["elapsed_ms"])
                );
            }
        }
        ("webhook", "deliveries") => {
            let v = client.get("/v1/webhooks/deliveries").await?;
            if json_out {
                print_json(out, &v)
            } else {
                let rows = v
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|d| {
                        vec![
                            s(&d["id"]),
                            s(&d["event_type"]),
                            s(&d["endpoint_id"]),
                            s(&d["state"]),
                            s(&d["attempts"]),
                            s(&d["last_status"]),
                        ]
                    })
                    .collect();
                table(
                    out,
                    &[
                        "ID",
                        "EVENT",
                        "ENDPOINT",
                        "STATE",
                        "ATTEMPTS",
                        "LAST STATUS",
                    ],
                    rows,
                );
            }
        }
        ("token", "create") => {
            if args.len() != 2 {
                return Err(usage("token create NAME read|invoices|admin"));
            }
            let v = client
                .post("/v1/tokens", json!({"name": args[0], "scope": args[1]}))
                .await?;
            if json_out {
                print_json(out, &v)
            } else {
                let _ = writeln!(out, "{}\n(shown only now)", s(&v["token"]));
            }
        }
        ("token", "list") => {
            let v = client.get("/v1/tokens").await?;
            if json_out {
                print_json(out, &v)
            } else {
                let rows = v
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|t| vec![s(&t["id"]), s(&t["name"]), s(&t["scope"]), s(&t["prefix"])])
                    .collect();
                table(out, &["ID", "NAME", "SCOPE", "PREFIX"], rows);
            }
        }
        ("token", "revoke") => {
            let id = args
                .first()
                .cloned()
                .ok_or_else(|| usage("token revoke ID"))?;
            client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/tokens/{}", urlencode(&id)),
                    None,
                )
                .await?;
            let _ = writeln!(out, "revoked token {id}");
        }
        ("events", first) => {
            if !first.is_empty() {
                args.insert(0, first.to_string());
            }
            let after = num(opt(&mut args, "--after")?, "--after")?.unwrap_or(0);
            let limit = num(opt(&mut args, "--limit")?, "--limit")?.unwrap_or(100);
            no_extra(&args)?;
            let v = client
                .get(&format!("/v1/events?after={after}&limit={limit}"))
                .await?;
            if json_out {
                print_json(out, &v)
            } else {
                let rows = v["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|e| {
                        vec![
                            s(&e["seq"]),
                            s(&e["event_type"]),
                            s(&e["payload"]["invoice_id"]),
                            s(&e["payload"]["timestamp"]),
                        ]
                    })
                    .collect();
                table(out, &["SEQ", "EVENT", "INVOICE", "TIME"], rows);
            }
        }
        (c, sub) => {
            return Err(usage(
                format!("unknown command: {c} {sub}").trim().to_string(),
            ));
        }
    }
    Ok(())
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
