//! The merchant domain on real regtest: invoices priced in fiat and sats, hold invoices,
//! cancellation and expiry refusing payments, the event log across a restart, queries,
//! validation and the health report. The merchant node's events are consumed by the
//! [`Merchant`] processor; the customers' by the tests.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use lightkeeper::backend::{BackendEvent, Hash32, InvoiceState, LightningBackend};
use lightkeeper::breaker::{BreakerConfig, BreakerState};
use lightkeeper::events::StoredEvent;
use lightkeeper::invoice::{
    HoldPreimage, Invoice, InvoiceAmount, InvoiceConfig, InvoiceError, InvoiceQuery,
    InvoiceService, InvoiceStatus, NewInvoice,
};
use lightkeeper::merchant::{Merchant, MerchantConfig};
use lightkeeper::rates::{CoinGeckoProvider, RateAggregator, RateError, RateSource, RatesConfig};
use lightkeeper::reliability::ReliabilityConfig;
use lightkeeper::webhook::{verify, NewEndpoint, WebhookConfig, WebhookHeaders, Webhooks};
use lightkeeper::{Error, Event, Node, PaymentHash};
use lightkeeper_harness::{expect_event, tempdir, wait_until, Regtest};
use rust_decimal::Decimal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(30);

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A loopback server answering CoinGecko's `/api/v3/simple/price` with its real JSON shape:
/// 1 BTC = 45 000 EUR (the real API is unreachable here). Serves at most 10 000 requests, then
/// stops; it also ends with the test process.
fn coingecko_url() -> &'static str {
    use std::io::{BufRead, BufReader, Write};
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(10_000) {
                let Ok(mut stream) = stream else { continue };
                let mut request_line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                // Drain the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let (status, body) = if request_line.contains("/api/v3/simple/price")
                    && request_line.contains("vs_currencies=eur")
                {
                    ("200 OK", r#"{"bitcoin":{"eur":45000}}"#)
                } else {
                    ("404 Not Found", r#"{"error":"not found"}"#)
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    })
}

/// The real aggregator over the real CoinGecko provider, served from loopback.
fn rates() -> Arc<RateAggregator> {
    let provider = CoinGeckoProvider::new(coingecko_url(), None, Duration::from_secs(5)).unwrap();
    Arc::new(
        RateAggregator::with_providers(vec![Arc::new(provider)], &RatesConfig::default()).unwrap(),
    )
}

/// Expiry from 1 s so tests can watch invoices expire; a fast sweep.
fn config() -> MerchantConfig {
    MerchantConfig {
        invoices: InvoiceConfig {
            min_expiry: Duration::from_secs(1),
            sweep_interval: Duration::from_millis(200),
            ..InvoiceConfig::default()
        },
        ..MerchantConfig::default()
    }
}

fn merchant(node: &Arc<Node>, config: MerchantConfig) -> Merchant {
    let rates = rates();
    let probe = rates.clone();
    Merchant::open_embedded(node.clone(), rates, config)
        .unwrap()
        .with_rates_age(move || probe.health().cached.iter().map(|c| c.age).max())
}

fn status(m: &Merchant, id: &str) -> InvoiceStatus {
    m.invoices().get(id).unwrap().expect("invoice").status
}

fn wait_status(m: &Merchant, id: &str, want: InvoiceStatus) -> Invoice {
    wait_until(T, &format!("invoice {id} {want}"), || status(m, id) == want);
    m.invoices().get(id).unwrap().unwrap()
}

/// Pays and waits for the payer's outcome: `Ok(hash)` or `Err(reason)`.
fn pay(payer: &Node, bolt11: &str, amount_msat: Option<u64>) -> Result<PaymentHash, String> {
    let hash = payer
        .pay_invoice(bolt11, amount_msat, None)
        .map_err(|e| e.to_string())?;
    match expect_event(
        payer,
        T,
        |e| matches!(e, Event::PaymentSuccessful { payment_hash, .. } | Event::PaymentFailed { payment_hash: Some(payment_hash), .. } if *payment_hash == hash),
    ) {
        Event::PaymentSuccessful { .. } => Ok(hash),
        Event::PaymentFailed { reason, .. } => Err(reason),
        _ => unreachable!(),
    }
}

type Requests = Arc<std::sync::Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>;

/// A loopback HTTP receiver answering 200 and recording each request's headers and body.
async fn receiver() -> (String, Requests) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let got: Requests = Arc::default();
    let store = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, len) = loop {
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (p + 4, len);
                }
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break (usize::MAX, 0),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            if head_end == usize::MAX {
                continue;
            }
            while buf.len() < head_end + len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let headers = String::from_utf8_lossy(&buf[..head_end])
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let body = buf[head_end..(head_end + len).min(buf.len())].to_vec();
            store.lock().unwrap().push((headers, body));
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, got)
}

/// The events of one invoice, in order.
fn events_of(m: &Merchant, id: &str) -> Vec<StoredEvent> {
    m.events()
        .read_after(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.payload["invoice_id"] == id)
        .collect()
}

fn types(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

#[test]
fn fiat_invoice_paid_overpaid_cancelled_expired_and_second_payment_refused() {
    let rt = Regtest::start();
    let (dm, da, dc) = (tempdir(), tempdir(), tempdir());
    let m_node = Arc::new(rt.node(dm.path()));
    let (a, c) = (rt.node(da.path()), rt.node(dc.path()));
    rt.fund(&a, 1);
    rt.fund(&c, 1);
    // 500 EUR is 1.11 M sat.
    rt.open_channel(&a, &m_node, 2_000_000, 0);
    rt.open_channel(&c, &m_node, 2_000_000, 0);

    let tokio = runtime();
    let _enter = tokio.enter();
    let m = merchant(&m_node, config());
    let hooks = Webhooks::open(m.events(), WebhookConfig::default()).unwrap();
    let (url, received) = tokio.block_on(receiver());
    let endpoint = hooks
        .add_endpoint(NewEndpoint {
            url,
            event_types: vec!["payment_received".into()],
            secret: None,
        })
        .unwrap();
    let m = m.with_webhooks(hooks);
    m.start().unwrap();
    let mut live = m.events().subscribe();

    // 500.00 EUR at 45 000 EUR/BTC = 1 111 111 111.1 msat, rounded up.
    let inv = tokio
        .block_on(
            m.invoices().create(
                NewInvoice::new(
                    InvoiceAmount::Fiat {
                        amount: dec("500.00"),
                        currency: "eur".into(),
                    },
                    "Invoice INV-001",
                )
                .with_external_ref("INV-001")
                .with_metadata(serde_json::json!({"client": "Acme Corp"})),
            ),
        )
        .unwrap();
    assert_eq!(inv.id, "INV-001-LN");
    assert_eq!(inv.status, InvoiceStatus::Open);
    assert_eq!(inv.amount_msat, Some(1_111_111_112));
    let fiat = inv.fiat.clone().unwrap();
    assert_eq!(
        (fiat.amount, fiat.currency.as_str(), fiat.btc_price),
        (dec("500.00"), "EUR", dec("45000"))
    );
    assert_eq!(fiat.source, "coingecko", "priced at the served rate");
    assert_eq!(live.try_recv().unwrap().event_type, "invoice_created");

    pay(&a, &inv.bolt11, None).expect("customer pays");
    let paid = wait_status(&m, &inv.id, InvoiceStatus::Settled);
    assert_eq!(paid.received_msat, Some(1_111_111_112));
    assert_eq!(paid.overpaid_msat(), 0);
    assert!(paid.settled_at.is_some());
    let evs = events_of(&m, &inv.id);
    assert_eq!(types(&evs), ["invoice_created", "payment_received"]);
    let p = &evs[1].payload;
    assert_eq!(p["amount_fiat"], "500.00");
    assert_eq!(p["currency"], "EUR");
    assert_eq!(p["amount_sats"], 1_111_111);
    assert_eq!(p["amount_msat"], 1_111_111_112u64);
    assert_eq!(p["metadata"]["client"], "Acme Corp");
    assert_eq!(p["payment_hash"], inv.payment_hash.to_string());
    assert_eq!(p["description"], "Invoice INV-001");

    // The merchant's webhook dispatcher delivered it, signed.
    wait_until(T, "webhook delivered", || {
        received.lock().unwrap().len() == 1
    });
    let (headers, body) = received.lock().unwrap()[0].clone();
    let h =
        WebhookHeaders::from_pairs(headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
    verify(
        &endpoint.secret,
        &h,
        &body,
        lightkeeper::webhook::DEFAULT_TOLERANCE,
        std::time::SystemTime::now(),
    )
    .expect("valid signature");
    let hook: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (hook["event"].as_str(), hook["invoice_id"].as_str()),
        (Some("payment_received"), Some("INV-001-LN"))
    );
    assert_eq!(hook["amount_fiat"], "500.00");

    // A second payment of the settled invoice, from another customer, is failed back.
    let second = pay(&c, &inv.bolt11, None);
    assert!(second.is_err(), "second payment must fail: {second:?}");
    assert_eq!(status(&m, &inv.id), InvoiceStatus::Settled);
    assert_eq!(types(&events_of(&m, &inv.id)).len(), 2, "no second receipt");

    // Overpayment (up to 2x) is accepted and recorded; an open amount takes what is paid.
    let over = tokio
        .block_on(
            m.invoices()
                .create(NewInvoice::new(InvoiceAmount::Sats(10_000), "tip welcome")),
        )
        .unwrap();
    assert!(over.id.starts_with("inv_"));
    pay(&a, &over.bolt11, Some(15_000_000)).unwrap();
    let over = wait_status(&m, &over.id, InvoiceStatus::Settled);
    assert_eq!(
        (over.received_msat, over.overpaid_msat()),
        (Some(15_000_000), 5_000_000)
    );
    let open = tokio
        .block_on(
            m.invoices()
                .create(NewInvoice::new(InvoiceAmount::Open, "donation")),
        )
        .unwrap();
    assert_eq!(open.amount_msat, None);
    pay(&a, &open.bolt11, Some(7_000_000)).unwrap();
    assert_eq!(
        wait_status(&m, &open.id, InvoiceStatus::Settled).received_msat,
        Some(7_000_000)
    );

    // A cancelled invoice refuses payment.
    let cancelled = tokio
        .block_on(
            m.invoices()
                .create(NewInvoice::new(InvoiceAmount::Msat(2_000_000), "cancel me")),
        )
        .unwrap();
    let after = tokio.block_on(m.invoices().cancel(&cancelled.id)).unwrap();
    assert_eq!(after.status, InvoiceStatus::Cancelled);
    assert!(pay(&a, &cancelled.bolt11, None).is_err());
    assert_eq!(status(&m, &cancelled.id), InvoiceStatus::Cancelled);
    assert_eq!(
        types(&events_of(&m, &cancelled.id)),
        ["invoice_created", "invoice_cancelled"]
    );

    // An expired invoice is swept, cancelled on the backend, and refuses payment.
    let short = tokio
        .block_on(
            m.invoices().create(
                NewInvoice::new(InvoiceAmount::Sats(1_000), "hurry")
                    .with_expiry(Duration::from_secs(2)),
            ),
        )
        .unwrap();
    let expired = wait_status(&m, &short.id, InvoiceStatus::Expired);
    assert!(expired.closed_at.is_some());
    let on_backend = tokio
        .block_on(m.backend().lookup_invoice(short.payment_hash))
        .unwrap()
        .unwrap();
    assert_eq!(on_backend.state, InvoiceState::Cancelled);
    assert!(matches!(
        a.pay_invoice(&short.bolt11, None, None),
        Err(Error::InvalidInvoice(_))
    ));
    assert_eq!(
        types(&events_of(&m, &short.id)),
        ["invoice_created", "invoice_expired"]
    );

    wait_until(T, "three webhooks, one per payment", || {
        received.lock().unwrap().len() == 3
    });
    let h = tokio.block_on(m.health());
    assert!(h.healthy, "{h:?}");
    assert_eq!(h.backend.breaker, BreakerState::Closed);
    assert_eq!(h.backend.node_id, Some(m_node.node_id().to_string()));
    assert!(h.chain_sync_age.unwrap() < Duration::from_secs(60));
    assert!(h.rates_age.unwrap() < Duration::from_secs(60));
    let backlog = h.webhook_backlog.expect("webhooks report their backlog");
    assert_eq!((backlog.pending, backlog.dead), (0, 0), "{backlog:?}");

    tokio.block_on(m.stop());
    assert!(!m.is_running());
}

#[test]
fn hold_invoices_settled_and_cancelled() {
    let rt = Regtest::start();
    let (dm, da) = (tempdir(), tempdir());
    let m_node = Arc::new(rt.node(dm.path()));
    let a = rt.node(da.path());
    rt.fund(&a, 1);
    rt.open_channel(&a, &m_node, 1_000_000, 0);

    let tokio = runtime();
    let _enter = tokio.enter();
    let m = merchant(&m_node, config());
    m.start().unwrap();
    let svc = m.invoices();

    // Accepted, then settled by the merchant with the preimage the service drew.
    let h1 = tokio
        .block_on(
            svc.create(
                NewInvoice::new(InvoiceAmount::Sats(20_000), "hold: ship first")
                    .with_external_ref("ORDER-7")
                    .hold(HoldPreimage::Generate),
            ),
        )
        .unwrap();
    assert!(h1.hold);
    assert_eq!(h1.preimage.unwrap().sha256(), h1.payment_hash);
    match tokio.block_on(svc.settle(&h1.id)) {
        Err(InvoiceError::InvalidState { status, .. }) => assert_eq!(status, InvoiceStatus::Open),
        other => panic!("settling before payment: {other:?}"),
    }
    let hash1 = a.pay_invoice(&h1.bolt11, None, None).unwrap();
    let accepted = wait_status(&m, &h1.id, InvoiceStatus::Accepted);
    assert_eq!(accepted.received_msat, Some(20_000_000));
    assert!(accepted.accepted_at.is_some());
    let settled = tokio.block_on(svc.settle(&h1.id)).unwrap();
    assert_eq!(settled.status, InvoiceStatus::Settled);
    match expect_event(&a, T, |e| {
        matches!(
            e,
            Event::PaymentSuccessful { .. } | Event::PaymentFailed { .. }
        )
    }) {
        Event::PaymentSuccessful { payment_hash, .. } => assert_eq!(payment_hash, hash1),
        other => panic!("payer: {other:?}"),
    }
    // Settling again is a no-op; the backend's own settlement event changes nothing either.
    assert_eq!(
        tokio.block_on(svc.settle(&h1.id)).unwrap().status,
        InvoiceStatus::Settled
    );
    wait_until(T, "backend settled", || {
        tokio
            .block_on(m.backend().lookup_invoice(h1.payment_hash))
            .unwrap()
            .is_some_and(|b| b.state == InvoiceState::Settled)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        types(&events_of(&m, &h1.id)),
        ["invoice_created", "invoice_accepted", "payment_received"]
    );

    // The caller keeps the preimage: accepted, then cancelled; the payer sees the failure.
    let preimage = Hash32::random();
    let h2 = tokio
        .block_on(
            svc.create(
                NewInvoice::new(InvoiceAmount::Sats(30_000), "hold: cancel me")
                    .hold(HoldPreimage::HashOnly(preimage.sha256())),
            ),
        )
        .unwrap();
    assert_eq!(h2.preimage, None);
    let hash2 = a.pay_invoice(&h2.bolt11, None, None).unwrap();
    wait_status(&m, &h2.id, InvoiceStatus::Accepted);
    assert!(matches!(
        tokio.block_on(svc.settle(&h2.id)),
        Err(InvoiceError::Preimage(_))
    ));
    assert!(matches!(
        tokio.block_on(svc.settle_with_preimage(&h2.id, Hash32::random())),
        Err(InvoiceError::Preimage(_))
    ));
    let c = tokio.block_on(svc.cancel(&h2.id)).unwrap();
    assert_eq!(c.status, InvoiceStatus::Cancelled);
    match expect_event(&a, T, |e| {
        matches!(
            e,
            Event::PaymentSuccessful { .. } | Event::PaymentFailed { .. }
        )
    }) {
        Event::PaymentFailed { payment_hash, .. } => assert_eq!(payment_hash, Some(hash2)),
        other => panic!("payer should see a failure: {other:?}"),
    }
    // A cancelled invoice never settles.
    match tokio.block_on(svc.settle_with_preimage(&h2.id, preimage)) {
        Err(InvoiceError::InvalidState {
            status, message, ..
        }) => {
            assert_eq!(status, InvoiceStatus::Cancelled);
            assert!(message.contains("never settles"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        types(&events_of(&m, &h2.id)),
        ["invoice_created", "invoice_accepted", "invoice_cancelled"]
    );
    let held = events_of(&m, &h2.id);
    assert_eq!(held[1].payload["amount_sats"], 30_000);

    // Held past the claim deadline: the node fails the payment back before the HTLC could
    // force a channel close, and the invoice closes as cancelled; the payer sees the failure.
    let h3 = tokio
        .block_on(
            svc.create(
                NewInvoice::new(InvoiceAmount::Sats(25_000), "hold: forgotten")
                    .hold(HoldPreimage::Generate),
            ),
        )
        .unwrap();
    let hash3 = a.pay_invoice(&h3.bolt11, None, None).unwrap();
    wait_status(&m, &h3.id, InvoiceStatus::Accepted);
    let mut mined = 0;
    while status(&m, &h3.id) == InvoiceStatus::Accepted {
        assert!(mined < 600, "still accepted after {mined} blocks");
        rt.mine_and_sync(10, &[&m_node, &a]);
        mined += 10;
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("[hold] failed back after {mined} blocks");
    // The merchant had at least the hold delta (144 blocks by default) minus LDK's fail-back
    // buffer (39 blocks) to decide: at least 105 blocks, more with the payer's random offset.
    assert!(mined >= 105, "failed back after only {mined} blocks");
    assert_eq!(status(&m, &h3.id), InvoiceStatus::Cancelled);
    match expect_event(&a, T, |e| {
        matches!(
            e,
            Event::PaymentSuccessful { .. } | Event::PaymentFailed { .. }
        )
    }) {
        Event::PaymentFailed { payment_hash, .. } => assert_eq!(payment_hash, Some(hash3)),
        other => panic!("payer should see a failure: {other:?}"),
    }
    let record = m_node
        .payment(&PaymentHash(h3.payment_hash.0))
        .unwrap()
        .expect("merchant's record");
    assert_eq!(record.status, lightkeeper::PaymentStatus::Failed);
    assert!(matches!(
        tokio.block_on(svc.settle(&h3.id)),
        Err(InvoiceError::InvalidState {
            status: InvoiceStatus::Cancelled,
            ..
        })
    ));
    assert_eq!(
        types(&events_of(&m, &h3.id)),
        ["invoice_created", "invoice_accepted", "invoice_cancelled"]
    );
    assert!(
        m_node.list_channels().iter().all(|c| c.is_usable),
        "the channel survives the timeout"
    );

    tokio.block_on(m.stop());
}

#[test]
fn event_log_replays_exactly_the_missed_events_after_a_restart() {
    let rt = Regtest::start();
    let (dm, da) = (tempdir(), tempdir());
    let mut m_node = Arc::new(rt.node(dm.path()));
    let a = rt.node(da.path());
    rt.fund(&a, 1);
    rt.open_channel(&a, &m_node, 1_000_000, 0);

    let tokio = runtime();
    let _enter = tokio.enter();
    let m = merchant(&m_node, config());
    m.start().unwrap();
    let i1 =
        tokio
            .block_on(m.invoices().create(
                NewInvoice::new(InvoiceAmount::Sats(5_000), "first").with_external_ref("R1"),
            ))
            .unwrap();
    // A consumer (a webhook sender, say) has seen everything so far.
    let cursor = m.events().last_seq().unwrap();

    pay(&a, &i1.bolt11, None).unwrap();
    wait_status(&m, &i1.id, InvoiceStatus::Settled);
    let i2 =
        tokio
            .block_on(m.invoices().create(
                NewInvoice::new(InvoiceAmount::Sats(6_000), "second").with_external_ref("R2"),
            ))
            .unwrap();

    // The merchant stops; a payment arrives meanwhile and waits in the node's event queue.
    tokio.block_on(m.stop());
    pay(&a, &i2.bolt11, None).unwrap();
    assert_eq!(status(&m, &i2.id), InvoiceStatus::Open);
    // Let the commitment dance finish before stopping: the node's shutdown can persist its
    // channel manager before the last monitor update, and on restart LDK then force-closes the
    // channel as stale (a node bug, see the report). 11 000 sat received minus the 10 000 sat
    // reserve leaves 1 000 sat sendable once both claims are irrevocable.
    wait_until(T, "claims irrevocably committed", || {
        m_node.list_channels()[0].outbound_capacity_msat >= 1_000_000
    });
    std::thread::sleep(Duration::from_millis(200));
    drop(m);
    m_node.stop().unwrap();
    drop(m_node);

    // Rebuilt from the same directory.
    m_node = Arc::new(rt.node(dm.path()));
    let m = merchant(&m_node, config());
    m.start().unwrap();
    let settled = wait_status(&m, &i2.id, InvoiceStatus::Settled);
    assert_eq!(settled.received_msat, Some(6_000_000));

    let missed = m.events().read_after(cursor, 100).unwrap();
    let got: Vec<(&str, &str)> = missed
        .iter()
        .map(|e| {
            (
                e.event_type.as_str(),
                e.payload["invoice_id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(got.len(), 3, "{missed:#?}");
    assert_eq!(
        got,
        [
            ("payment_received", "R1-LN"),
            ("invoice_created", "R2-LN"),
            ("payment_received", "R2-LN"),
        ]
    );
    let seqs: Vec<u64> = missed.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [cursor + 1, cursor + 2, cursor + 3]);
    assert_eq!(m.events().last_seq().unwrap(), cursor + 3);

    // Backend events are delivered at least once: replays append nothing.
    tokio
        .block_on(m.apply(&BackendEvent::InvoiceSettled {
            payment_hash: i2.payment_hash,
            amount_msat: 6_000_000,
        }))
        .unwrap();
    let sent = BackendEvent::PaymentSucceeded {
        payment_hash: Hash32([7; 32]),
        preimage: Hash32([8; 32]),
        fee_msat: 12,
        amount_msat: Some(5_000),
    };
    tokio.block_on(m.apply(&sent)).unwrap();
    tokio.block_on(m.apply(&sent)).unwrap();
    let closed = BackendEvent::ChannelClosed {
        channel_id: "ab".repeat(32),
        counterparty: None,
        reason: "test replay".into(),
    };
    tokio.block_on(m.apply(&closed)).unwrap();
    tokio.block_on(m.apply(&closed)).unwrap();
    let tail = m.events().read_after(cursor + 3, 100).unwrap();
    assert_eq!(types(&tail), ["payment_sent", "channel_closed"]);
    assert_eq!(tail[0].payload["fee_msat"], 12);
    assert_eq!(tail[0].payload["amount_msat"], 5_000);

    tokio.block_on(m.stop());
}

/// A rate source with no rate for anything, to show the error a fiat invoice gets.
struct NoRates;

#[async_trait::async_trait]
impl RateSource for NoRates {
    async fn btc_rate(&self, currency: &str) -> Result<lightkeeper::rates::Rate, RateError> {
        Err(RateError::Unavailable(format!(
            "no provider answered for {currency}"
        )))
    }
}

#[test]
fn validation_queries_pagination_expiry_and_health() {
    let rt = Regtest::start();
    let dm = tempdir();
    let m_node = Arc::new(rt.node(dm.path()));
    let tokio = runtime();
    let _enter = tokio.enter();
    let mut cfg = config();
    cfg.invoices.min_expiry = Duration::from_secs(2);
    cfg.reliability = ReliabilityConfig {
        call_timeout: Duration::from_secs(5),
        retries: 1,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        breaker: BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_secs(60),
        },
    };
    let m = merchant(&m_node, cfg);
    m.start().unwrap();
    let svc = m.invoices();
    let create = |req: NewInvoice| tokio.block_on(svc.create(req));
    let sats = |n| NewInvoice::new(InvoiceAmount::Sats(n), "x");

    // Validation, each with an actionable message.
    match create(sats(1).with_expiry(Duration::from_secs(1))) {
        Err(e @ InvoiceError::InvalidExpiry { .. }) => {
            assert_eq!(
                e.to_string(),
                "invalid expiry: 1s is outside the allowed range 2s..=168h"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        create(sats(1).with_expiry(Duration::from_secs(169 * 3600))),
        Err(InvoiceError::InvalidExpiry { .. })
    ));
    let defaults = InvoiceService::new(
        m.backend().clone(),
        m.events().clone(),
        rates(),
        InvoiceConfig::default(),
    )
    .unwrap();
    match tokio.block_on(defaults.create(sats(1).with_expiry(Duration::from_secs(1800)))) {
        Err(e) => assert_eq!(
            e.to_string(),
            "invalid expiry: 30m is outside the allowed range 1h..=168h"
        ),
        Ok(i) => panic!("accepted {i:?}"),
    }
    for bad in [
        serde_json::json!(["a"]),
        serde_json::json!("a"),
        serde_json::json!(null),
        serde_json::json!(3),
    ] {
        match create(sats(1).with_metadata(bad.clone())) {
            Err(InvoiceError::InvalidMetadata(m)) => assert!(m.contains("JSON object"), "{m}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    for zero in [
        InvoiceAmount::Sats(0),
        InvoiceAmount::Msat(0),
        InvoiceAmount::Sats(u64::MAX),
        InvoiceAmount::Fiat {
            amount: dec("0"),
            currency: "EUR".into(),
        },
        InvoiceAmount::Fiat {
            amount: dec("-5"),
            currency: "EUR".into(),
        },
    ] {
        assert!(
            matches!(
                create(NewInvoice::new(zero.clone(), "x")),
                Err(InvoiceError::InvalidAmount(_))
            ),
            "{zero:?}"
        );
    }
    assert!(matches!(
        create(NewInvoice::new(
            InvoiceAmount::Fiat {
                amount: dec("1"),
                currency: "EURO".into()
            },
            "x"
        )),
        Err(InvoiceError::InvalidCurrency(_))
    ));
    assert!(matches!(
        create(NewInvoice::new(
            InvoiceAmount::Fiat {
                amount: dec("1"),
                currency: "JPY".into()
            },
            "x"
        )),
        Err(InvoiceError::Rate(_))
    ));
    let no_rates = InvoiceService::new(
        m.backend().clone(),
        m.events().clone(),
        Arc::new(NoRates),
        config().invoices,
    )
    .unwrap();
    match tokio.block_on(no_rates.create(NewInvoice::new(
        InvoiceAmount::Fiat {
            amount: dec("1"),
            currency: "EUR".into(),
        },
        "x",
    ))) {
        Err(e @ InvoiceError::Rate(RateError::Unavailable(_))) => {
            assert!(e.is_transient());
            assert!(e.to_string().starts_with("cannot price the invoice"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        create(sats(1).with_external_ref("INV 001")),
        Err(InvoiceError::InvalidReference(_))
    ));
    assert!(matches!(
        create(NewInvoice::new(InvoiceAmount::Sats(1), "d".repeat(640))),
        Err(InvoiceError::InvalidDescription(_))
    ));
    let first = create(sats(1_000).with_external_ref("INV-001")).unwrap();
    match create(sats(2_000).with_external_ref("INV-001")) {
        Err(e @ InvoiceError::DuplicateReference(_)) => {
            assert!(e.to_string().contains("INV-001-LN"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m.events().read_after(0, 100).unwrap().len(),
        1,
        "failed creations leave no events"
    );

    // Queries.
    let mut ids = vec![first.id.clone()];
    for i in 0..6u64 {
        let mut req = sats(1_000 + i);
        if i % 2 == 0 {
            req = req.with_external_ref(format!("INV-1{i}"));
        }
        ids.push(create(req).unwrap().id);
    }
    for id in [&ids[2], &ids[5]] {
        tokio.block_on(svc.cancel(id)).unwrap();
    }
    assert_eq!(
        svc.get(&ids[1]).unwrap().unwrap().external_ref.as_deref(),
        Some("INV-10")
    );
    assert_eq!(svc.get("INV-10-LN").unwrap().unwrap().id, ids[1]);
    assert_eq!(
        svc.by_external_ref("INV-001").unwrap().unwrap().id,
        first.id
    );
    assert_eq!(
        svc.by_payment_hash(&first.payment_hash)
            .unwrap()
            .unwrap()
            .id,
        first.id
    );
    assert_eq!(svc.get("nope").unwrap(), None);
    assert!(matches!(
        tokio.block_on(svc.cancel("nope")),
        Err(InvoiceError::NotFound(_))
    ));

    let mut seen = Vec::new();
    let mut q = InvoiceQuery {
        limit: 3,
        ..InvoiceQuery::default()
    };
    let mut pages = 0;
    loop {
        let page = svc.list(&q).unwrap();
        pages += 1;
        seen.extend(page.invoices.iter().map(|i| i.id.clone()));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let cancelled = svc
        .list(&InvoiceQuery {
            status: Some(InvoiceStatus::Cancelled),
            ..InvoiceQuery::default()
        })
        .unwrap();
    assert_eq!(
        cancelled
            .invoices
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>(),
        [ids[5].as_str(), ids[2].as_str()]
    );
    assert_eq!(cancelled.next_cursor, None);
    for bad in [
        InvoiceQuery {
            cursor: Some("abc".into()),
            ..InvoiceQuery::default()
        },
        InvoiceQuery {
            limit: 0,
            ..InvoiceQuery::default()
        },
    ] {
        assert!(matches!(svc.list(&bad), Err(InvoiceError::InvalidInput(_))));
    }
    match tokio
        .block_on(svc.cancel(&ids[0]))
        .and(tokio.block_on(svc.cancel(&ids[0])))
    {
        Ok(i) => assert_eq!(i.status, InvoiceStatus::Cancelled, "cancel is idempotent"),
        Err(e) => panic!("{e}"),
    }

    // An unpaid hold invoice expires; an expired invoice never settles nor cancels.
    let hold = create(
        sats(5_000)
            .hold(HoldPreimage::Generate)
            .with_expiry(Duration::from_secs(2)),
    )
    .unwrap();
    wait_status(&m, &hold.id, InvoiceStatus::Expired);
    for r in [
        tokio.block_on(svc.settle(&hold.id)),
        tokio.block_on(svc.cancel(&hold.id)),
    ] {
        assert!(
            matches!(
                r,
                Err(InvoiceError::InvalidState {
                    status: InvoiceStatus::Expired,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    assert_eq!(
        tokio
            .block_on(m.backend().lookup_invoice(hold.payment_hash))
            .unwrap()
            .unwrap()
            .state,
        InvoiceState::Cancelled
    );

    // Health: fine, then the node goes away and the breaker opens.
    let h = tokio.block_on(m.health());
    assert!(h.healthy, "{h:?}");
    assert!(h.last_event_seq > 0);
    m_node.stop().unwrap();
    let h = tokio.block_on(m.health());
    assert!(!h.healthy && !h.backend.reachable, "{h:?}");
    assert!(h.backend.error.unwrap().contains("not running"));
    let h = tokio.block_on(m.health());
    assert_eq!(h.backend.breaker, BreakerState::Open, "{h:?}");
    match create(sats(1)) {
        Err(InvoiceError::Backend(e)) => {
            assert!(e.is_transient());
            assert!(e.to_string().contains("circuit breaker"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    tokio.block_on(m.stop());
}
