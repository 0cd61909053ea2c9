//! Signed webhooks end to end: a real event log on a temp database, the dispatcher, and
//! loopback HTTP receivers started and stopped by the tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lightkeeper::events::{DomainEvent, EventLog, InvoiceEventData, StoredEvent};
use lightkeeper::webhook::{
    verify, verify_legacy, DeliveryQuery, DeliveryState, NewEndpoint, VerifyError, WebhookConfig,
    WebhookError, WebhookHeaders, Webhooks, DEFAULT_TOLERANCE,
};
use rust_decimal::Decimal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 receiver.

#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|s| s.as_str()).unwrap_or("")
    }
    fn id(&self) -> &str {
        self.header("webhook-id")
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn verify_with(&self, secret: &str, now: SystemTime) -> Result<(), VerifyError> {
        let headers =
            WebhookHeaders::from_pairs(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        verify(secret, &headers, &self.body, DEFAULT_TOLERANCE, now)
    }
}

#[derive(Default)]
struct Shared {
    status: Mutex<u16>,
    /// Bodies containing this answer 500.
    poison: Mutex<Option<String>>,
    delay: Mutex<Duration>,
    requests: Mutex<Vec<Received>>,
    concurrent: AtomicUsize,
    max_concurrent: AtomicUsize,
}

struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(status: u16) -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap(), status).await
    }

    async fn start_at(addr: SocketAddr, status: u16) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        *shared.status.lock().unwrap() = status;
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(serve(stream, s.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        Self { addr, shared, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }
    fn set_status(&self, status: u16) {
        *self.shared.status.lock().unwrap() = status;
    }
    fn set_delay(&self, d: Duration) {
        *self.shared.delay.lock().unwrap() = d;
    }
    fn set_poison(&self, p: Option<&str>) {
        *self.shared.poison.lock().unwrap() = p.map(str::to_string);
    }
    fn all(&self) -> Vec<Received> {
        self.shared.requests.lock().unwrap().clone()
    }
    fn ok(&self) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }
    fn ok_ids(&self) -> Vec<String> {
        self.ok().iter().map(|r| r.id().to_string()).collect()
    }
    fn stop(self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut headers = HashMap::new();
    for line in head.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[header_end..header_end + len].to_vec();
    let now = shared.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_concurrent.fetch_max(now, Ordering::SeqCst);
    let delay = *shared.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    shared.concurrent.fetch_sub(1, Ordering::SeqCst);
    let mut status = *shared.status.lock().unwrap();
    if let Some(p) = shared.poison.lock().unwrap().as_deref() {
        if String::from_utf8_lossy(&body).contains(p) {
            status = 500;
        }
    }
    shared.requests.lock().unwrap().push(Received {
        headers,
        body,
        status,
    });
    let reply = if status == 200 {
        "ok"
    } else {
        "receiver says no"
    };
    let resp = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A loopback address nothing listens on (yet).
async fn closed_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Setup.

fn fast_config() -> WebhookConfig {
    WebhookConfig {
        horizon: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(300),
        jitter: 0.2,
        request_timeout: Duration::from_secs(3),
        max_concurrency_per_endpoint: 1,
        poll_interval: Duration::from_millis(500),
        batch_size: 500,
        rotation_grace: Duration::from_secs(3600),
    }
}

fn open(path: &Path, config: WebhookConfig) -> (EventLog, Webhooks) {
    let conn = Arc::new(Mutex::new(lightkeeper::db::open_connection(path).unwrap()));
    let log = EventLog::open(conn).unwrap();
    let hooks = Webhooks::open(&log, config).unwrap();
    (log, hooks)
}

fn invoice(id: &str) -> InvoiceEventData {
    InvoiceEventData {
        invoice_id: id.into(),
        payment_hash: "ab".repeat(32),
        amount_sats: Some(11_111),
        amount_msat: Some(11_111_000),
        amount_fiat: Some(Decimal::new(50000, 2)),
        currency: Some("EUR".into()),
        timestamp: lightkeeper::events::rfc3339_now(),
        description: format!("Invoice {id}"),
        metadata: serde_json::json!({"client": "Acme Corp"}),
    }
}

fn paid(log: &EventLog, id: &str) -> StoredEvent {
    log.append(&DomainEvent::PaymentReceived(invoice(id)))
        .unwrap()
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const WAIT: Duration = Duration::from_secs(15);

fn endpoint(url: &str) -> NewEndpoint {
    NewEndpoint {
        url: url.into(),
        ..NewEndpoint::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn delivers_signed_webhook_with_standard_headers() {
    let dir = tempfile::tempdir().unwrap();
    // A long poll interval: only the live wake-up can make this fast.
    let config = WebhookConfig {
        poll_interval: Duration::from_secs(60),
        ..fast_config()
    };
    let (log, hooks) = open(&dir.path().join("db.sqlite"), config);
    let rx = Receiver::start(200).await;
    let ep = hooks.add_endpoint(endpoint(&rx.url())).unwrap();
    assert!(ep.secret.starts_with("whsec_"));
    let dispatcher = hooks.start().unwrap();
    assert_eq!(hooks.start().unwrap_err(), WebhookError::AlreadyRunning);

    let ev = paid(&log, "INV-001-LN");
    let sent_at = Instant::now();
    wait_until("the delivery", WAIT, || rx.ok().len() == 1).await;
    assert!(sent_at.elapsed() < Duration::from_secs(5), "live wake-up");
    let got = rx.ok().remove(0);

    // Exact headers.
    assert_eq!(got.id(), format!("evt_{}_{}", ev.seq, ep.id));
    assert_eq!(got.header("content-type"), "application/json");
    let ts: i64 = got.header("webhook-timestamp").parse().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts).abs() <= 5, "timestamp {ts} vs now {now}");
    let sig = got.header("webhook-signature");
    assert!(sig.starts_with("v1,") && !sig.contains(' '), "{sig}");
    got.verify_with(&ep.secret, SystemTime::now()).unwrap();
    verify_legacy(&ep.secret, &got.body, got.header("x-lightning-signature")).unwrap();

    // Seed 002's payload fields.
    let body = got.json();
    assert_eq!(body["event"], "payment_received");
    assert_eq!(body["invoice_id"], "INV-001-LN");
    assert_eq!(body["payment_hash"], "ab".repeat(32));
    assert_eq!(body["amount_sats"], 11_111);
    assert_eq!(body["amount_fiat"], "500.00");
    assert_eq!(body["currency"], "EUR");
    assert_eq!(body["description"], "Invoice INV-001-LN");
    assert_eq!(body["metadata"]["client"], "Acme Corp");
    let stamp = body["timestamp"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(stamp).is_ok() && stamp.ends_with('Z'));
    assert_eq!(body, ev.payload);

    // Replay of the same request later, and tampering, are rejected.
    let later = SystemTime::now() + Duration::from_secs(600);
    assert!(matches!(
        got.verify_with(&ep.secret, later),
        Err(VerifyError::TimestampOutOfTolerance { .. })
    ));
    let mut tampered = got.clone();
    tampered.body = String::from_utf8(got.body.clone())
        .unwrap()
        .replace("11111", "99999")
        .into_bytes();
    assert_ne!(tampered.body, got.body);
    assert_eq!(
        tampered.verify_with(&ep.secret, SystemTime::now()),
        Err(VerifyError::SignatureMismatch)
    );
    assert!(verify_legacy(
        &ep.secret,
        &tampered.body,
        got.header("x-lightning-signature")
    )
    .is_err());
    let mut no_sig = got.clone();
    no_sig.headers.remove("webhook-signature");
    assert_eq!(
        no_sig.verify_with(&ep.secret, SystemTime::now()),
        Err(VerifyError::MissingHeader("webhook-signature"))
    );

    // Visible as delivered.
    wait_until("delivered state", WAIT, || {
        hooks
            .list_deliveries(&DeliveryQuery::state(DeliveryState::Delivered))
            .unwrap()
            .len()
            == 1
    })
    .await;
    let d = hooks
        .list_deliveries(&DeliveryQuery::default())
        .unwrap()
        .remove(0);
    assert_eq!(
        (d.attempts, d.last_status, d.last_error),
        (1, Some(200), None)
    );
    assert_eq!(d.webhook_id, got.id());
    assert_eq!(d.event_type, "payment_received");
    dispatcher.shutdown().await;
    rx.stop();
}

#[tokio::test]
async fn receiver_down_then_up_delivers_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, hooks) = open(&dir.path().join("db.sqlite"), fast_config());
    let rx = Receiver::start(503).await;
    let ep = hooks.add_endpoint(endpoint(&rx.url())).unwrap();
    let dispatcher = hooks.start().unwrap();
    let seqs: Vec<u64> = ["A", "B", "C"].iter().map(|i| paid(&log, i).seq).collect();
    let ids: Vec<String> = seqs.iter().map(|s| format!("evt_{s}_{}", ep.id)).collect();

    // Down: the first delivery is retried with backoff; the endpoint backs off as a whole, so
    // the later ones wait behind it.
    wait_until("three failed attempts", WAIT, || rx.all().len() >= 3).await;
    let pending = hooks
        .list_deliveries(&DeliveryQuery::state(DeliveryState::Pending))
        .unwrap();
    assert_eq!(pending.len(), 3);
    assert!(pending[0].attempts >= 2);
    assert_eq!(pending[0].last_status, Some(503));
    assert!(pending[0].last_error.as_deref().unwrap().contains("503"));
    assert!(pending[0].next_attempt_at_ms.is_some());
    assert_eq!(hooks.backlog().unwrap().pending, 3);
    assert!(
        rx.all().iter().all(|r| r.id() == ids[0]),
        "only the head is retried"
    );

    // Up: delivered exactly once each, same ids, in order.
    rx.set_status(200);
    wait_until("the backlog to drain", WAIT, || rx.ok().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.ok_ids(), ids);
    wait_until("delivered state", WAIT, || {
        hooks.backlog().unwrap().pending == 0
    })
    .await;
    let all = hooks.list_deliveries(&DeliveryQuery::default()).unwrap();
    assert!(all.iter().all(|d| d.state == DeliveryState::Delivered));
    assert!(all[0].attempts >= 3);
    assert_eq!(all[1].attempts, 1);
    for r in rx.ok() {
        r.verify_with(&ep.secret, SystemTime::now()).unwrap();
    }
    dispatcher.shutdown().await;
    rx.stop();
}

#[tokio::test]
async fn undelivered_webhooks_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let addr = closed_addr().await;
    let url = format!("http://{addr}/hooks");

    // Run 1: the receiver is down (connection refused).
    let (ep, first) = {
        let (log, hooks) = open(&path, fast_config());
        let ep = hooks.add_endpoint(endpoint(&url)).unwrap();
        let dispatcher = hooks.start().unwrap();
        let first: Vec<u64> = ["R1", "R2"].iter().map(|i| paid(&log, i).seq).collect();
        wait_until("a failed attempt", WAIT, || {
            let d = hooks.list_deliveries(&DeliveryQuery::default()).unwrap();
            d.len() == 2 && d[0].attempts >= 1
        })
        .await;
        let d = hooks.list_deliveries(&DeliveryQuery::default()).unwrap();
        assert_eq!(d.len(), 2);
        let err = d[0].last_error.clone().unwrap();
        assert!(err.contains("connection failed"), "{err}");
        assert_eq!(d[0].last_status, None);
        dispatcher.shutdown().await;
        (ep, first)
    };

    // Meanwhile (no dispatcher running) more events are appended.
    let later = {
        let conn = Arc::new(Mutex::new(lightkeeper::db::open_connection(&path).unwrap()));
        let log = EventLog::open(conn).unwrap();
        paid(&log, "R3").seq
    };

    // Run 2: receiver up; everything arrives once, in order.
    let rx = Receiver::start_at(addr, 200).await;
    let (_log, hooks) = open(&path, fast_config());
    let backlog = hooks.backlog().unwrap();
    assert_eq!((backlog.pending, backlog.events_behind), (2, 1));
    let dispatcher = hooks.start().unwrap();
    wait_until("all three deliveries", WAIT, || rx.ok().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expected: Vec<String> = first
        .iter()
        .chain([&later])
        .map(|s| format!("evt_{s}_{}", ep.id))
        .collect();
    assert_eq!(rx.ok_ids(), expected);
    for r in rx.ok() {
        r.verify_with(&ep.secret, SystemTime::now()).unwrap();
    }
    wait_until("empty backlog", WAIT, || {
        let b = hooks.backlog().unwrap();
        b.pending == 0 && b.events_behind == 0
    })
    .await;
    dispatcher.shutdown().await;
    rx.stop();
}

#[tokio::test]
async fn retries_give_up_at_horizon_and_dead_letter_is_visible() {
    let dir = tempfile::tempdir().unwrap();
    let config = WebhookConfig {
        horizon: Duration::from_millis(1500),
        ..fast_config()
    };
    let (log, hooks) = open(&dir.path().join("db.sqlite"), config);
    let rx = Receiver::start(200).await;
    // Messages mentioning POISON get a 500: only they are retried; the others are not blocked.
    rx.set_poison(Some("POISON"));
    let ep = hooks.add_endpoint(endpoint(&rx.url())).unwrap();
    let dispatcher = hooks.start().unwrap();
    let bad = paid(&log, "POISON-1");
    let good = paid(&log, "GOOD-1");
    let bad_id = format!("evt_{}_{}", bad.seq, ep.id);
    wait_until("the good one", WAIT, || rx.ok().len() == 1).await;
    assert_eq!(rx.ok_ids(), vec![format!("evt_{}_{}", good.seq, ep.id)]);

    wait_until("the dead letter", WAIT, || {
        hooks.backlog().unwrap().dead == 1
    })
    .await;
    let dead = hooks
        .list_deliveries(&DeliveryQuery::state(DeliveryState::Dead))
        .unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.webhook_id, bad_id);
    assert!(d.attempts >= 3, "attempts {}", d.attempts);
    assert_eq!(d.last_status, Some(500));
    assert!(d.last_error.as_deref().unwrap().contains("HTTP 500"));
    assert_eq!(d.next_attempt_at_ms, None);
    assert!(d.last_attempt_at_ms.unwrap() >= d.created_at_ms + 1500);
    let attempts = rx.all().iter().filter(|r| r.id() == bad_id).count();
    assert_eq!(attempts as u32, d.attempts);
    assert!(hooks
        .list_deliveries(&DeliveryQuery::state(DeliveryState::Pending))
        .unwrap()
        .is_empty());
    // No further attempts once dead.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.all().iter().filter(|r| r.id() == bad_id).count(),
        attempts
    );

    // A dead letter can be retried by hand once the receiver is fixed.
    rx.set_poison(None);
    let retried = hooks.retry_delivery(d.id).unwrap();
    assert_eq!(retried.state, DeliveryState::Pending);
    wait_until("the retried delivery", WAIT, || rx.ok().len() == 2).await;
    assert_eq!(rx.ok_ids()[1], bad_id);
    wait_until("delivered", WAIT, || {
        hooks.get_delivery(d.id).unwrap().state == DeliveryState::Delivered
    })
    .await;
    assert_eq!(
        hooks.retry_delivery(d.id).unwrap_err(),
        WebhookError::NotDead(d.id)
    );
    assert_eq!(
        hooks.retry_delivery(9999).unwrap_err(),
        WebhookError::UnknownDelivery(9999)
    );
    dispatcher.shutdown().await;
    rx.stop();
}

#[tokio::test]
async fn secret_rotation_signs_with_both_until_grace_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (log, hooks) = open(&dir.path().join("db.sqlite"), fast_config());
    let rx = Receiver::start(200).await;
    let ep = hooks.add_endpoint(endpoint(&rx.url())).unwrap();
    let old = ep.secret.clone();
    assert!(matches!(
        hooks.rotate_secret(ep.id, Some("secret".into()), None),
        Err(WebhookError::InvalidSecret(_))
    ));
    let rotated = hooks
        .rotate_secret(ep.id, None, Some(Duration::from_millis(2500)))
        .unwrap();
    let rotated_at = Instant::now();
    let new = rotated.secret.clone();
    assert_ne!(new, old);
    assert_eq!(rotated.previous_secret.as_deref(), Some(old.as_str()));
    assert!(
        !format!("{rotated:?}").contains(&new),
        "Debug redacts secrets"
    );
    let dispatcher = hooks.start().unwrap();

    paid(&log, "ROT-1");
    wait_until("first delivery", WAIT, || rx.ok().len() == 1).await;
    let during = rx.ok().remove(0);
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    during.verify_with(&new, SystemTime::now()).unwrap();
    during.verify_with(&old, SystemTime::now()).unwrap();
    verify_legacy(&new, &during.body, during.header("x-lightning-signature")).unwrap();

    assert!(rotated_at.elapsed() < Duration::from_millis(2500));
    tokio::time::sleep(Duration::from_millis(2600).saturating_sub(rotated_at.elapsed())).await;
    paid(&log, "ROT-2");
    wait_until("second delivery", WAIT, || rx.ok().len() == 2).await;
    let after = rx.ok().remove(1);
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1);
    after.verify_with(&new, SystemTime::now()).unwrap();
    assert_eq!(
        after.verify_with(&old, SystemTime::now()),
        Err(VerifyError::SignatureMismatch)
    );
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(
        hooks.get_endpoint(ep.id).unwrap().signing_secrets(now_ms),
        vec![new.as_str()]
    );

    // A caller-chosen secret works too.
    let chosen = lightkeeper::webhook::generate_secret();
    let ep2 = hooks
        .rotate_secret(ep.id, Some(chosen.clone()), Some(Duration::ZERO))
        .unwrap();
    assert_eq!(ep2.secret, chosen);
    assert_eq!(ep2.signing_secrets(u64::MAX), vec![chosen.as_str()]);
    dispatcher.shutdown().await;
    rx.stop();
}

#[tokio::test]
async fn event_filter_selects_event_types() {
    let dir = tempfile::tempdir().unwrap();
    let (log, hooks) = open(&dir.path().join("db.sqlite"), fast_config());
    let rx_a = Receiver::start(200).await;
    let rx_b = Receiver::start(200).await;
    let err = hooks
        .add_endpoint(NewEndpoint {
            url: rx_a.url(),
            event_types: vec!["payment_recieved".into()],
            secret: None,
        })
        .unwrap_err();
    assert!(matches!(&err, WebhookError::UnknownEventType(m) if m.contains("payment_received")));
    let a = hooks
        .add_endpoint(NewEndpoint {
            url: rx_a.url(),
            event_types: vec!["payment_received".into()],
            secret: None,
        })
        .unwrap();
    assert_eq!(a.event_types, vec!["payment_received".to_string()]);
    let b = hooks.add_endpoint(endpoint(&rx_b.url())).unwrap();
    let dispatcher = hooks.start().unwrap();
    log.append(&DomainEvent::InvoiceCreated(invoice("F-1")))
        .unwrap();
    let p = paid(&log, "F-1");
    log.append(&DomainEvent::ChannelOpened {
        channel_id: "cd".repeat(32),
        counterparty: "02".repeat(33),
        timestamp: lightkeeper::events::rfc3339_now(),
    })
    .unwrap();
    wait_until("all events at B", WAIT, || rx_b.ok().len() == 3).await;
    wait_until("one event at A", WAIT, || rx_a.ok().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx_a.ok_ids(), vec![format!("evt_{}_{}", p.seq, a.id)]);
    let events: Vec<String> = rx_b
        .ok()
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        ["invoice_created", "payment_received", "channel_opened"]
    );
    let at_a = hooks
        .list_deliveries(&DeliveryQuery {
            endpoint_id: Some(a.id),
            ..DeliveryQuery::default()
        })
        .unwrap();
    assert_eq!(at_a.len(), 1);
    assert_eq!(
        hooks
            .list_deliveries(&DeliveryQuery {
                endpoint_id: Some(b.id),
                ..DeliveryQuery::default()
            })
            .unwrap()
            .len(),
        3
    );
    dispatcher.shutdown().await;
    rx_a.stop();
    rx_b.stop();
}

#[test]
fn endpoints_require_https_except_loopback_and_can_be_managed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, hooks) = open(&dir.path().join("db.sqlite"), fast_config());
    for url in [
        "http://example.com/hook",
        "http://192.168.1.10:8080/hook",
        "http://localhost.example.com/hook",
    ] {
        let err = hooks.add_endpoint(endpoint(url)).unwrap_err();
        assert!(
            matches!(&err, WebhookError::InsecureUrl(m) if m.contains("https://")),
            "{url}: {err}"
        );
        assert!(err.to_string().contains("loopback"));
    }
    for url in ["ftp://example.com/", "not a url", "https://"] {
        assert!(
            matches!(
                hooks.add_endpoint(endpoint(url)),
                Err(WebhookError::InvalidUrl(_))
            ),
            "{url}"
        );
    }
    assert!(matches!(
        hooks.add_endpoint(NewEndpoint {
            url: "https://example.com/x".into(),
            event_types: vec![],
            secret: Some("hunter2".into()),
        }),
        Err(WebhookError::InvalidSecret(_))
    ));
    let remote = hooks
        .add_endpoint(endpoint("https://merchant.example.com/lightning"))
        .unwrap();
    let v6 = hooks.add_endpoint(endpoint("http://[::1]:9/x")).unwrap();
    let local = hooks
        .add_endpoint(endpoint("http://localhost:9/x"))
        .unwrap();
    let lo = hooks
        .add_endpoint(endpoint("http://127.0.0.2:9/x"))
        .unwrap();
    assert_eq!(
        hooks
            .list_endpoints()
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![remote.id, v6.id, local.id, lo.id]
    );
    assert_eq!(hooks.get_endpoint(remote.id).unwrap(), remote);

    // Outbox without a running dispatcher; disabled endpoints get nothing.
    hooks.disable_endpoint(v6.id).unwrap();
    hooks.remove_endpoint(local.id).unwrap();
    hooks.remove_endpoint(lo.id).unwrap();
    assert_eq!(
        hooks.remove_endpoint(lo.id),
        Err(WebhookError::UnknownEndpoint(lo.id))
    );
    assert_eq!(
        hooks.get_endpoint(local.id),
        Err(WebhookError::UnknownEndpoint(local.id))
    );
    paid(&log, "M-1");
    assert_eq!(hooks.enqueue_new_events().unwrap(), 1);
    assert_eq!(
        hooks.enqueue_new_events().unwrap(),
        0,
        "unique per event and endpoint"
    );
    let enabled = hooks.enable_endpoint(v6.id).unwrap();
    assert!(enabled.enabled);
    let second = paid(&log, "M-2");
    // An endpoint added now does not receive older events.
    let newcomer = hooks
        .add_endpoint(endpoint("https://late.example.com/"))
        .unwrap();
    assert_eq!(hooks.enqueue_new_events().unwrap(), 2);
    let all = hooks.list_deliveries(&DeliveryQuery::default()).unwrap();
    let pairs: Vec<(u64, i64)> = all.iter().map(|d| (d.event_seq, d.endpoint_id)).collect();
    assert_eq!(
        pairs,
        vec![(1, remote.id), (second.seq, remote.id), (second.seq, v6.id)]
    );
    assert!(all.iter().all(|d| d.endpoint_id != newcomer.id));
    let page = hooks
        .list_deliveries(&DeliveryQuery {
            after_id: Some(all[0].id),
            limit: 1,
            ..DeliveryQuery::default()
        })
        .unwrap();
    assert_eq!(page, vec![all[1].clone()]);
    hooks.remove_endpoint(remote.id).unwrap();
    assert_eq!(hooks.backlog().unwrap().pending, 1);

    // The dispatcher needs a runtime; bad configuration is refused.
    assert_eq!(hooks.start().unwrap_err(), WebhookError::NoRuntime);
    let bad = WebhookConfig {
        max_concurrency_per_endpoint: 0,
        ..fast_config()
    };
    assert!(matches!(
        Webhooks::open(&log, bad),
        Err(WebhookError::InvalidConfig(_))
    ));
}

#[tokio::test]
async fn per_endpoint_concurrency_limit_is_respected() {
    let dir = tempfile::tempdir().unwrap();
    let config = WebhookConfig {
        max_concurrency_per_endpoint: 2,
        ..fast_config()
    };
    let (log, hooks) = open(&dir.path().join("db.sqlite"), config);
    let rx = Receiver::start(200).await;
    rx.set_delay(Duration::from_millis(300));
    hooks.add_endpoint(endpoint(&rx.url())).unwrap();
    let dispatcher = hooks.start().unwrap();
    for i in 0..6 {
        paid(&log, &format!("C-{i}"));
    }
    wait_until("six deliveries", WAIT, || rx.ok().len() == 6).await;
    assert_eq!(rx.shared.max_concurrent.load(Ordering::SeqCst), 2);
    let mut ids = rx.ok_ids();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    dispatcher.shutdown().await;
    rx.stop();
}

#[tokio::test]
async fn webhook_test_sends_synthetic_event_now() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, hooks) = open(&dir.path().join("db.sqlite"), fast_config());
    let rx = Receiver::start(200).await;
    let ep = hooks
        .add_endpoint(NewEndpoint {
            url: rx.url(),
            event_types: vec!["payment_received".into()],
            secret: None,
        })
        .unwrap();
    // No dispatcher needed.
    let res = hooks.send_test(ep.id).await.unwrap();
    assert_eq!(res.status, 200);
    let got = rx.ok().remove(0);
    assert_eq!(got.id(), res.webhook_id);
    assert_eq!(got.json()["event"], "webhook.test");
    got.verify_with(&ep.secret, SystemTime::now()).unwrap();
    assert!(hooks
        .list_deliveries(&DeliveryQuery::default())
        .unwrap()
        .is_empty());

    rx.set_status(500);
    let err = hooks.send_test(ep.id).await.unwrap_err();
    assert!(
        matches!(&err, WebhookError::DeliveryFailed(m) if m.contains("HTTP 500")),
        "{err}"
    );
    let down = hooks
        .add_endpoint(endpoint(&format!("http://{}/x", closed_addr().await)))
        .unwrap();
    let err = hooks.send_test(down.id).await.unwrap_err();
    assert!(
        matches!(&err, WebhookError::DeliveryFailed(m) if m.contains("connection failed")),
        "{err}"
    );
    assert_eq!(
        hooks.send_test(424242).await.unwrap_err(),
        WebhookError::UnknownEndpoint(424242)
    );
    rx.stop();
}

#[tokio::test]
async fn slow_receiver_times_out_and_is_retried_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = WebhookConfig {
        request_timeout: Duration::from_millis(300),
        ..fast_config()
    };
    let (log, hooks) = open(&dir.path().join("db.sqlite"), config);
    let rx = Receiver::start(200).await;
    rx.set_delay(Duration::from_secs(1));
    let ep = hooks.add_endpoint(endpoint(&rx.url())).unwrap();
    let dispatcher = hooks.start().unwrap();
    let ev = paid(&log, "SLOW-1");
    wait_until("a timed-out attempt", WAIT, || {
        hooks
            .list_deliveries(&DeliveryQuery::default())
            .unwrap()
            .first()
            .is_some_and(|d| d.attempts >= 1)
    })
    .await;
    let d = hooks
        .list_deliveries(&DeliveryQuery::default())
        .unwrap()
        .remove(0);
    assert_eq!(d.state, DeliveryState::Pending);
    let err = d.last_error.unwrap();
    assert!(err.contains("timed out"), "{err}");
    rx.set_delay(Duration::ZERO);
    wait_until("delivered", WAIT, || {
        hooks.get_delivery(d.id).unwrap().state == DeliveryState::Delivered
    })
    .await;
    // At-least-once: the receiver may have seen the timed-out attempt too, always with the
    // same webhook-id, so it can deduplicate.
    let expected = format!("evt_{}_{}", ev.seq, ep.id);
    assert!(!rx.all().is_empty());
    assert!(rx.all().iter().all(|r| r.id() == expected));
    dispatcher.shutdown().await;
    rx.stop();
}
