//! Exchange-rate providers and the aggregator against loopback HTTP servers that serve the
//! providers' real JSON shapes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightkeeper::breaker::{BreakerConfig, BreakerState};
use lightkeeper::rates::{
    CoinGeckoProvider, CoinMarketCapProvider, FixedRateProvider, ManualClock, ProviderError,
    RateAggregator, RateError, RateProvider, RateSource, RatesConfig,
};
use rust_decimal::Decimal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Client timeout used throughout: long enough for loopback, short enough for tests.
const TIMEOUT: Duration = Duration::from_millis(200);

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// What the test server does with each request.
#[derive(Clone)]
enum Behavior {
    Respond {
        status: u16,
        body: String,
    },
    /// Read the request and never answer (the connection is dropped after 5 s at most).
    Hang,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn query_has(&self, pair: &str) -> bool {
        self.query.split('&').any(|p| p == pair)
    }
}

/// A minimal HTTP/1.1 server on 127.0.0.1; stopped when dropped.
struct TestServer {
    url: String,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    behavior: Arc<Mutex<Behavior>>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

impl TestServer {
    async fn start(behavior: Behavior) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let behavior = Arc::new(Mutex::new(behavior));
        let (h, s, b) = (hits.clone(), seen.clone(), behavior.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (h, s, b) = (h.clone(), s.clone(), b.clone());
                conns.spawn(async move { serve(stream, h, s, b).await });
                while conns.try_join_next().is_some() {}
            }
        });
        TestServer {
            url,
            hits,
            seen,
            behavior,
            task,
        }
    }

    async fn json(status: u16, body: &str) -> Self {
        Self::start(Behavior::Respond {
            status,
            body: body.to_owned(),
        })
        .await
    }

    fn set(&self, status: u16, body: &str) {
        *self.behavior.lock().unwrap() = Behavior::Respond {
            status,
            body: body.to_owned(),
        };
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    behavior: Arc<Mutex<Behavior>>,
) {
    // Read the request head (GETs have no body); bounded in size.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    seen.lock().unwrap().push(Seen {
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
    });
    hits.fetch_add(1, Ordering::SeqCst);
    let behavior = behavior.lock().unwrap().clone();
    match behavior {
        Behavior::Hang => tokio::time::sleep(Duration::from_secs(5)).await,
        Behavior::Respond { status, body } => {
            let resp = format!(
                "HTTP/1.1 {status} Test\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

fn coingecko_body(currency: &str, price: &str) -> String {
    format!(r#"{{"bitcoin":{{"{}":{price}}}}}"#, currency.to_lowercase())
}

fn cmc_body(currency: &str, price: &str) -> String {
    format!(
        r#"{{"status":{{"timestamp":"2025-06-01T12:00:00.000Z","error_code":0,"error_message":null,
        "elapsed":12,"credit_count":1,"notice":null}},"data":{{"BTC":{{"id":1,"name":"Bitcoin",
        "symbol":"BTC","slug":"bitcoin","num_market_pairs":11000,"is_active":1,
        "cmc_rank":1,"last_updated":"2025-06-01T12:00:00.000Z","quote":{{"{currency}":{{
        "price":{price},"volume_24h":31234567890.123,"percent_change_24h":-0.5,
        "market_cap":1812345678901.5,"last_updated":"2025-06-01T12:00:00.000Z"}}}}}}}}}}"#
    )
}

/// A config pointing CoinGecko (and optionally CoinMarketCap) at test servers.
fn config(cg: Option<&TestServer>, cmc: Option<&TestServer>) -> RatesConfig {
    let mut c = RatesConfig {
        request_timeout: TIMEOUT,
        breaker: BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(30),
        },
        ..RatesConfig::default()
    };
    c.coingecko.enabled = cg.is_some();
    if let Some(s) = cg {
        c.coingecko.base_url = s.url.clone();
    }
    c.coinmarketcap.enabled = cmc.is_some();
    c.coinmarketcap.api_key = Some("cmc-test-key".into());
    if let Some(s) = cmc {
        c.coinmarketcap.base_url = s.url.clone();
    }
    c
}

fn aggregator(c: &RatesConfig, clock: &Arc<ManualClock>) -> RateAggregator {
    RateAggregator::from_config(c)
        .unwrap()
        .with_clock(clock.clone())
}

#[tokio::test]
async fn coingecko_happy_path_sends_demo_key_and_query() {
    let server = TestServer::json(200, r#"{"bitcoin":{"eur":91234.56}}"#).await;
    let p = CoinGeckoProvider::new(&server.url, Some("cg-demo".into()), TIMEOUT).unwrap();
    assert_eq!(p.name(), "coingecko");
    assert_eq!(p.fetch("EUR").await.unwrap(), dec("91234.56"));
    let req = server.last();
    assert_eq!(req.path, "/api/v3/simple/price");
    assert!(req.query_has("ids=bitcoin"), "{}", req.query);
    assert!(req.query_has("vs_currencies=eur"), "{}", req.query);
    assert_eq!(req.header("x-cg-demo-api-key"), Some("cg-demo"));

    // Without a key no key header is sent.
    let p = CoinGeckoProvider::new(&format!("{}/", server.url), None, TIMEOUT).unwrap();
    p.fetch("EUR").await.unwrap();
    assert_eq!(server.last().header("x-cg-demo-api-key"), None);
    assert_eq!(server.last().path, "/api/v3/simple/price");
}

#[tokio::test]
async fn coinmarketcap_happy_path_sends_key_and_query() {
    let server = TestServer::json(200, &cmc_body("EUR", "91234.5678")).await;
    let p = CoinMarketCapProvider::new(&server.url, "cmc-key", TIMEOUT).unwrap();
    assert_eq!(p.name(), "coinmarketcap");
    assert_eq!(p.fetch("eur").await.unwrap(), dec("91234.5678"));
    let req = server.last();
    assert_eq!(req.path, "/v1/cryptocurrency/quotes/latest");
    assert!(req.query_has("symbol=BTC"), "{}", req.query);
    assert!(req.query_has("convert=EUR"), "{}", req.query);
    assert_eq!(req.header("X-CMC_PRO_API_KEY"), Some("cmc-key"));
    assert!(CoinMarketCapProvider::new(&server.url, " ", TIMEOUT).is_err());
}

#[tokio::test]
async fn prices_keep_every_decimal_digit() {
    // 17 significant digits: an f64 would round this.
    let server = TestServer::json(200, r#"{"bitcoin":{"usd":98765.432109876543}}"#).await;
    let p = CoinGeckoProvider::new(&server.url, None, TIMEOUT).unwrap();
    assert_eq!(
        p.fetch("USD").await.unwrap().to_string(),
        "98765.432109876543"
    );
}

#[tokio::test]
async fn coinmarketcap_error_codes_and_statuses_are_reported() {
    let server = TestServer::json(
        401,
        r#"{"status":{"timestamp":"2025-06-01T12:00:00.000Z","error_code":1002,
            "error_message":"API key missing.","elapsed":0,"credit_count":0}}"#,
    )
    .await;
    let p = CoinMarketCapProvider::new(&server.url, "bad", TIMEOUT).unwrap();
    let e = p.fetch("EUR").await.unwrap_err();
    assert_eq!(
        e,
        ProviderError::Http {
            status: 401,
            message: "API key missing.".into()
        }
    );
    assert!(e.to_string().contains("check the API key"), "{e}");

    server.set(
        200,
        r#"{"status":{"error_code":1008,"error_message":"You've exceeded your API Key's HTTP request rate limit."},"data":{}}"#,
    );
    let e = p.fetch("EUR").await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::Api(m) if m.contains("1008") && m.contains("rate limit")),
        "{e:?}"
    );

    server.set(
        400,
        r#"{"status":{"error_code":400,"error_message":"Invalid value for \"convert\": \"XYZ\""}}"#,
    );
    assert_eq!(
        p.fetch("XYZ").await,
        Err(ProviderError::MissingCurrency("XYZ".into()))
    );
}

#[tokio::test]
async fn http_429_and_500_are_errors() {
    let server = TestServer::json(
        429,
        r#"{"status":{"error_code":429,"error_message":"You've exceeded the Rate Limit."}}"#,
    )
    .await;
    let p = CoinGeckoProvider::new(&server.url, None, TIMEOUT).unwrap();
    let e = p.fetch("EUR").await.unwrap_err();
    assert_eq!(
        e,
        ProviderError::RateLimited {
            message: "You've exceeded the Rate Limit.".into()
        }
    );
    assert!(e.to_string().contains("429"), "{e}");

    server.set(500, "<html>Internal Server Error</html>");
    let e = p.fetch("EUR").await.unwrap_err();
    assert_eq!(
        e,
        ProviderError::Http {
            status: 500,
            message: "<html>Internal Server Error</html>".into()
        }
    );

    let cmc = TestServer::json(503, "").await;
    let p = CoinMarketCapProvider::new(&cmc.url, "k", TIMEOUT).unwrap();
    assert!(matches!(
        p.fetch("EUR").await,
        Err(ProviderError::Http { status: 503, .. })
    ));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = TestServer::start(Behavior::Hang).await;
    let p = CoinGeckoProvider::new(&server.url, None, TIMEOUT).unwrap();
    let t = Instant::now();
    assert_eq!(p.fetch("EUR").await, Err(ProviderError::Timeout));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // Through the aggregator the message names the provider and the limit.
    let clock = Arc::new(ManualClock::new());
    let agg = aggregator(&config(Some(&server), None), &clock);
    let t = Instant::now();
    let e = agg.btc_rate("EUR").await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let RateError::Unavailable(m) = &e else {
        panic!("{e:?}")
    };
    assert!(
        m.contains("coingecko: request timed out after 200 ms"),
        "{m}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let p = CoinGeckoProvider::new(&url, None, TIMEOUT).unwrap();
    let e = p.fetch("EUR").await.unwrap_err();
    assert!(matches!(e, ProviderError::Transport(_)), "{e:?}");
}

#[tokio::test]
async fn malformed_bodies_are_rejected() {
    let server = TestServer::json(200, "not json").await;
    let cg = CoinGeckoProvider::new(&server.url, None, TIMEOUT).unwrap();
    let cmc = CoinMarketCapProvider::new(&server.url, "k", TIMEOUT).unwrap();
    for body in [
        "not json",
        "",
        r#"{"bitcoin":{"eur":}}"#,
        r#"{"bitcoin":"eur"}"#,
        r#"{"status":{"error_code":0},"data":{"BTC":{"quote":{"EUR":{"price":"1"}}}"#,
        "[1,2,3]",
    ] {
        server.set(200, body);
        let e = cg.fetch("EUR").await.unwrap_err();
        assert!(matches!(e, ProviderError::Malformed(_)), "{body}: {e:?}");
        let e = cmc.fetch("EUR").await.unwrap_err();
        assert!(matches!(e, ProviderError::Malformed(_)), "{body}: {e:?}");
    }
    for body in [
        r#"{"bitcoin":{"eur":"91234.5"}}"#,
        r#"{"bitcoin":{"eur":0}}"#,
        r#"{"bitcoin":{"eur":-1.5}}"#,
        r#"{"bitcoin":{"eur":null}}"#,
        r#"{"bitcoin":{"eur":1e999}}"#,
    ] {
        server.set(200, body);
        let e = cg.fetch("EUR").await.unwrap_err();
        assert!(matches!(e, ProviderError::InvalidPrice(_)), "{body}: {e:?}");
    }
}

#[tokio::test]
async fn missing_currency_is_reported_as_unsupported() {
    let server = TestServer::json(200, &coingecko_body("usd", "100000")).await;
    let p = CoinGeckoProvider::new(&server.url, None, TIMEOUT).unwrap();
    assert_eq!(
        p.fetch("XAU").await,
        Err(ProviderError::MissingCurrency("XAU".into()))
    );
    let cmc = TestServer::json(200, &cmc_body("USD", "100000")).await;
    let clock = Arc::new(ManualClock::new());
    let agg = aggregator(&config(Some(&server), Some(&cmc)), &clock);
    let e = agg.btc_rate("xau").await.unwrap_err();
    assert!(
        matches!(&e, RateError::UnsupportedCurrency(m) if m.contains("XAU") && m.contains("coinmarketcap")),
        "{e:?}"
    );
    // Not quoting a currency is no reason to open a breaker.
    for _ in 0..5 {
        agg.btc_rate("XAU").await.unwrap_err();
    }
    assert!(agg
        .health()
        .providers
        .iter()
        .all(|p| p.breaker == BreakerState::Closed && p.last_error.is_none()));
    // Garbage codes are refused before any request.
    let hits = server.hits();
    assert!(matches!(
        agg.btc_rate("EURO").await,
        Err(RateError::UnsupportedCurrency(_))
    ));
    assert!(matches!(
        agg.btc_rate("../x").await,
        Err(RateError::UnsupportedCurrency(_))
    ));
    assert_eq!(server.hits(), hits);
}

#[tokio::test]
async fn median_of_two_providers_is_their_mean() {
    let cg = TestServer::json(200, &coingecko_body("EUR", "100000.10")).await;
    let cmc = TestServer::json(200, &cmc_body("EUR", "100001.15")).await;
    let clock = Arc::new(ManualClock::new());
    let agg = aggregator(&config(Some(&cg), Some(&cmc)), &clock);
    let r = agg.btc_rate("eur").await.unwrap();
    assert_eq!(r.currency, "EUR");
    assert_eq!(r.btc_price, dec("100000.625"));
    assert_eq!(r.source, "median(coingecko,coinmarketcap)");
    assert_eq!(r.fetched_at_unix, {
        use lightkeeper::rates::Clock;
        clock.unix_now()
    });

    // One of two failing: the other's price alone.
    cmc.set(500, "");
    clock.advance(Duration::from_secs(301));
    let r = agg.btc_rate("EUR").await.unwrap();
    assert_eq!(
        (r.btc_price, r.source.as_str()),
        (dec("100000.10"), "coingecko")
    );
    let h = agg.health();
    assert_eq!(
        h.providers[1].last_error.as_deref(),
        Some("HTTP 500"),
        "{h:?}"
    );
}

#[tokio::test]
async fn median_of_three_providers_is_the_middle_one() {
    let cg = TestServer::json(200, &coingecko_body("USD", "101000")).await;
    let cmc = TestServer::json(200, &cmc_body("USD", "99000.5")).await;
    let providers: Vec<Arc<dyn RateProvider>> = vec![
        Arc::new(CoinGeckoProvider::new(&cg.url, None, TIMEOUT).unwrap()),
        Arc::new(CoinMarketCapProvider::new(&cmc.url, "k", TIMEOUT).unwrap()),
        Arc::new(FixedRateProvider::new([("USD", dec("100000"))])),
    ];
    let mut c = config(None, None);
    c.cache_ttl = Duration::ZERO;
    let agg = RateAggregator::with_providers(providers, &c).unwrap();
    let r = agg.btc_rate("USD").await.unwrap();
    assert_eq!(r.btc_price, dec("100000"));
    assert_eq!(r.source, "median(coingecko,coinmarketcap,fixed)");

    // An outlier does not move the median far.
    cg.set(200, &coingecko_body("USD", "1"));
    let r = agg.btc_rate("USD").await.unwrap();
    assert_eq!(r.btc_price, dec("99000.5"));
}

#[tokio::test]
async fn cached_rate_is_served_within_the_ttl() {
    let cg = TestServer::json(200, &coingecko_body("EUR", "90000")).await;
    let clock = Arc::new(ManualClock::new());
    let agg = aggregator(&config(Some(&cg), None), &clock);
    let first = agg.btc_rate("EUR").await.unwrap();
    assert_eq!(cg.hits(), 1);
    cg.set(200, &coingecko_body("EUR", "95000"));
    clock.advance(Duration::from_secs(299));
    assert_eq!(agg.btc_rate("eur").await.unwrap(), first);
    assert_eq!(cg.hits(), 1, "served from the cache");
    assert_eq!(
        agg.health().cached_age("EUR"),
        Some(Duration::from_secs(299))
    );
    assert!(agg.health().cached[0].fresh);

    // Another currency is a separate entry.
    cg.set(200, &coingecko_body("USD", "97000"));
    agg.btc_rate("USD").await.unwrap();
    assert_eq!(cg.hits(), 2);

    cg.set(200, &coingecko_body("EUR", "95000"));
    clock.advance(Duration::from_secs(1));
    let r = agg.btc_rate("EUR").await.unwrap();
    assert_eq!(r.btc_price, dec("95000"));
    assert_eq!(cg.hits(), 3, "refreshed after the TTL");
    assert_eq!(agg.health().cached_age("EUR"), Some(Duration::ZERO));
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh() {
    let cg = TestServer::json(200, &coingecko_body("EUR", "90000")).await;
    let clock = Arc::new(ManualClock::new());
    let agg = Arc::new(aggregator(&config(Some(&cg), None), &clock));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let agg = agg.clone();
            tokio::spawn(async move { agg.btc_rate("EUR").await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().btc_price, dec("90000"));
    }
    assert_eq!(cg.hits(), 1);
}

#[tokio::test]
async fn concurrent_callers_share_one_failed_refresh() {
    // Callers queued behind a refresh that times out get its error instead of each waiting for
    // their own timeout in turn.
    let cg = TestServer::start(Behavior::Hang).await;
    let clock = Arc::new(ManualClock::new());
    let agg = Arc::new(aggregator(&config(Some(&cg), None), &clock));
    let t = Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let agg = agg.clone();
            tokio::spawn(async move { agg.btc_rate("EUR").await })
        })
        .collect();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
    }
    assert_eq!(cg.hits(), 1);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // A later call asks again.
    agg.btc_rate("EUR").await.unwrap_err();
    assert_eq!(cg.hits(), 2);
}

#[tokio::test]
async fn breaker_opens_after_failures_skips_then_half_opens() {
    let cg = TestServer::json(500, r#"{"error":"upstream down"}"#).await;
    let cmc = TestServer::json(200, &cmc_body("EUR", "90000")).await;
    let clock = Arc::new(ManualClock::new());
    let mut c = config(Some(&cg), Some(&cmc));
    c.cache_ttl = Duration::ZERO;
    let agg = aggregator(&c, &clock);
    for i in 1..=3 {
        let r = agg.btc_rate("EUR").await.unwrap();
        assert_eq!(r.source, "coinmarketcap");
        assert_eq!(cg.hits(), i);
    }
    let h = agg.health();
    assert_eq!(h.providers[0].name, "coingecko");
    assert_eq!(h.providers[0].breaker, BreakerState::Open);
    assert_eq!(
        h.providers[0].last_error.as_deref(),
        Some("HTTP 500: upstream down")
    );
    assert_eq!(h.providers[1].breaker, BreakerState::Closed);
    assert!(h.any_provider_available());

    // Open: skipped without a request.
    for _ in 0..3 {
        agg.btc_rate("EUR").await.unwrap();
    }
    assert_eq!(cg.hits(), 3);
    assert_eq!(cmc.hits(), 6);

    // After the open period one trial goes through; it fails and re-opens the breaker.
    clock.advance(Duration::from_secs(30));
    assert_eq!(agg.health().providers[0].breaker, BreakerState::HalfOpen);
    agg.btc_rate("EUR").await.unwrap();
    assert_eq!(cg.hits(), 4);
    assert_eq!(agg.health().providers[0].breaker, BreakerState::Open);
    agg.btc_rate("EUR").await.unwrap();
    assert_eq!(cg.hits(), 4);

    // Next trial succeeds: closed again and its price counts.
    cg.set(200, &coingecko_body("EUR", "91000"));
    clock.advance(Duration::from_secs(30));
    let r = agg.btc_rate("EUR").await.unwrap();
    assert_eq!(cg.hits(), 5);
    assert_eq!(r.btc_price, dec("90500"));
    let h = agg.health();
    assert_eq!(h.providers[0].breaker, BreakerState::Closed);
    assert_eq!(h.providers[0].last_error, None);
    assert!(h.providers[0].last_success_unix.is_some());
}

#[tokio::test]
async fn all_providers_down_uses_the_fallback_if_configured() {
    let cg = TestServer::json(500, "").await;
    let cmc = TestServer::json(
        429,
        r#"{"status":{"error_code":1008,"error_message":"slow down"}}"#,
    )
    .await;
    let clock = Arc::new(ManualClock::new());

    // Without a fallback: a clear error naming each provider.
    let agg = aggregator(&config(Some(&cg), Some(&cmc)), &clock);
    let e = agg.btc_rate("EUR").await.unwrap_err();
    let RateError::Unavailable(m) = &e else {
        panic!("{e:?}")
    };
    assert!(m.contains("coingecko: HTTP 500"), "{m}");
    assert!(
        m.contains("coinmarketcap: rate limited (HTTP 429): slow down"),
        "{m}"
    );
    assert!(m.contains("fallback rate for EUR"), "{m}");
    assert!(
        e.to_string().starts_with("no exchange rate available"),
        "{e}"
    );

    // Breakers open: still a clear error, saying the providers were skipped.
    for _ in 0..3 {
        agg.btc_rate("EUR").await.unwrap_err();
    }
    let e = agg.btc_rate("EUR").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("coingecko: skipped, circuit breaker open"),
        "{e}"
    );
    assert!(!agg.health().any_provider_available());

    // With a fallback.
    let mut c = config(Some(&cg), Some(&cmc));
    c.fallback_rates = BTreeMap::from([("eur".to_owned(), dec("85000"))]);
    let agg = aggregator(&c, &clock);
    let r = agg.btc_rate("EUR").await.unwrap();
    assert_eq!(r.btc_price, dec("85000"));
    assert_eq!(r.source, "fallback");
    assert_eq!(agg.health().fallback_currencies, vec!["EUR".to_owned()]);
    // The fallback is not cached: providers are asked again next time.
    let hits = cg.hits();
    cg.set(200, &coingecko_body("EUR", "90000"));
    let r = agg.btc_rate("EUR").await.unwrap();
    assert_eq!((r.source.as_str(), cg.hits()), ("coingecko", hits + 1));
    // A currency without a fallback still fails.
    cg.set(500, "");
    assert!(matches!(
        agg.btc_rate("USD").await,
        Err(RateError::Unavailable(_))
    ));
}

#[tokio::test]
async fn no_enabled_provider_is_a_clear_error() {
    let clock = Arc::new(ManualClock::new());
    let agg = aggregator(&config(None, None), &clock);
    let e = agg.btc_rate("EUR").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("no exchange-rate provider is enabled"),
        "{e}"
    );
}

#[tokio::test]
async fn staleness_bound_limits_how_old_a_cached_rate_may_be() {
    let cg = TestServer::json(200, &coingecko_body("EUR", "90000")).await;
    let clock = Arc::new(ManualClock::new());
    let mut c = config(Some(&cg), None);
    c.cache_ttl = Duration::from_secs(300);
    c.max_staleness = Duration::from_secs(900);
    c.breaker.failure_threshold = 100;
    let agg = aggregator(&c, &clock);
    let first = agg.btc_rate("EUR").await.unwrap();

    // Past the TTL, providers down, within the bound: the cached rate, as it was.
    cg.set(503, "");
    clock.advance(Duration::from_secs(600));
    assert_eq!(agg.btc_rate("EUR").await.unwrap(), first);
    assert_eq!(cg.hits(), 2, "the providers were asked first");
    let h = agg.health();
    assert_eq!(h.cached_age("EUR"), Some(Duration::from_secs(600)));
    assert!(!h.cached[0].fresh && h.cached[0].within_staleness_bound);

    // Past the bound: refused.
    clock.advance(Duration::from_secs(301));
    let e = agg.btc_rate("EUR").await.unwrap_err();
    let RateError::Stale(m) = &e else {
        panic!("{e:?}")
    };
    assert!(m.contains("901 s old"), "{m}");
    assert!(m.contains("900 s allowed"), "{m}");
    assert!(m.contains("coingecko: HTTP 503"), "{m}");
    assert!(!agg.health().cached[0].within_staleness_bound);

    // Same situation with a fallback configured: the fallback.
    let mut c = c.clone();
    c.fallback_rates.insert("EUR".into(), dec("80000"));
    cg.set(200, &coingecko_body("EUR", "90000"));
    let agg = aggregator(&c, &clock);
    agg.btc_rate("EUR").await.unwrap();
    cg.set(503, "");
    clock.advance(Duration::from_secs(901));
    let r = agg.btc_rate("EUR").await.unwrap();
    assert_eq!((r.btc_price, r.source.as_str()), (dec("80000"), "fallback"));

    // Providers back: a fresh rate again.
    cg.set(200, &coingecko_body("EUR", "92000"));
    let r = agg.btc_rate("EUR").await.unwrap();
    assert_eq!(
        (r.btc_price, r.source.as_str()),
        (dec("92000"), "coingecko")
    );
}

#[tokio::test]
async fn one_hanging_provider_does_not_block_the_other() {
    let cg = TestServer::start(Behavior::Hang).await;
    let cmc = TestServer::json(200, &cmc_body("EUR", "90000")).await;
    let clock = Arc::new(ManualClock::new());
    let agg = aggregator(&config(Some(&cg), Some(&cmc)), &clock);
    let t = Instant::now();
    let r = agg.btc_rate("EUR").await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(
        (r.btc_price, r.source.as_str()),
        (dec("90000"), "coinmarketcap")
    );
    assert_eq!((cg.hits(), cmc.hits()), (1, 1));
    assert_eq!(
        agg.health().providers[0].last_error.as_deref(),
        Some("request timed out after 200 ms")
    );
}
