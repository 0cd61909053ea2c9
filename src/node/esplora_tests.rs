//! The Esplora chain source against a loopback HTTP server that answers with the Esplora API's
//! shapes (as esplora-client 0.12 requests and parses them): `GET /fee-estimates` is a JSON
//! object of block target to sat/vB float, `GET /blocks/tip/height` a decimal integer as text,
//! `GET /block-height/:h` and `GET /blocks/tip/hash` a block hash as text, `POST /tx` takes the
//! transaction as hex and answers with its txid as text, and errors are text bodies with a
//! 4xx/5xx status.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, BlockHash, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness,
};
use lightning::chain::chaininterface::{ConfirmationTarget, FeeEstimator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::chain::{esplora_sat_per_vb_to_sat_per_kw, ChainSource, ChainSourceConfig, Fees};
use crate::Error;

/// Every test body runs under this bound.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests served on one connection at most.
const MAX_REQUESTS_PER_CONN: usize = 200;
/// Largest request head or body accepted.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    body: String,
}

/// Status, content type and body of an answer.
type Reply = (u16, &'static str, String);
type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain";

/// A minimal HTTP/1.1 server on 127.0.0.1 with keep-alive, Content-Length bodies only. It is
/// stopped (its accept loop and every connection task aborted) when dropped.
struct MockEsplora {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockEsplora {
    /// Binds 127.0.0.1:0 and serves `handler` on the current tokio runtime.
    async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let task = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                // Dropping the set (when this task is aborted) aborts the connections too.
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        break;
                    };
                    conns.spawn(serve_conn(stream, Arc::clone(&handler), Arc::clone(&log)));
                    // Reap finished connections so the set stays small.
                    while conns.try_join_next().is_some() {}
                }
            })
        };
        Self { addr, log, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

impl Drop for MockEsplora {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn serve_conn(mut stream: TcpStream, handler: Handler, log: Arc<Mutex<Vec<Request>>>) {
    let mut buf: Vec<u8> = Vec::new();
    for _ in 0..MAX_REQUESTS_PER_CONN {
        // Request head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            if buf.len() > MAX_REQUEST_BYTES {
                return;
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("").to_string();
        let mut content_length = 0usize;
        let mut close = false;
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    content_length = v.parse().unwrap_or(0);
                } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                } else if k == "transfer-encoding" {
                    // Not needed for esplora-client's requests; refuse rather than misparse.
                    return;
                }
            }
        }
        if content_length > MAX_REQUEST_BYTES {
            return;
        }
        // Request body.
        let body_start = head_end + 4;
        while buf.len() < body_start + content_length {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        let body = String::from_utf8_lossy(&buf[body_start..body_start + content_length]);
        let req = Request {
            method,
            path,
            body: body.to_string(),
        };
        buf.drain(..body_start + content_length);

        let (status, content_type, body) = handler(&req);
        log.lock().unwrap().push(req);
        let answer = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            reason(status),
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

fn esplora(url: String) -> ChainSource {
    ChainSource::new(
        &ChainSourceConfig::Esplora { url },
        Network::Bitcoin,
        Arc::new(Fees::new()),
    )
    .expect("esplora chain source")
}

/// Runs `f` under [`TEST_TIMEOUT`].
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

/// A port nothing listens on: bound, then released.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

fn not_found() -> Reply {
    (404, TEXT, "Not Found".into())
}

/// Mainnet block 840,000.
const HASH_840000: &str = "0000000000000000000320283a032748cef8227873ff4872689bf23f1cda83a5";
/// Mainnet block 840,001.
const HASH_840001: &str = "00000000000000000001b48a75d5a3077913f3f441eb7e08c13c43f768db2463";

/// The shape of blockstream.info's `/fee-estimates` (targets 1-25, 144, 504 and 1008), with
/// values chosen to exercise rounding: 16.1 sat/vB is 4025 sat/kWU exactly, which a plain
/// `ceil(f64 * 250)` gets wrong (4026).
const FEE_ESTIMATES: &str = r#"{"1":87.882,"2":87.882,"3":87.882,"4":87.882,"5":81.129,"6":68.285,"7":68.285,"8":68.285,"9":68.285,"10":68.285,"11":68.285,"12":16.1,"13":16.1,"14":16.1,"15":16.1,"16":16.1,"17":16.1,"18":16.1,"19":16.1,"20":16.1,"21":16.1,"22":16.1,"23":16.1,"24":16.1,"25":16.1,"144":1.027,"504":1.027,"1008":1.027}"#;

fn sample_tx() -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::from_byte_array([7; 32]),
                vout: 1,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::from_slice(&[vec![1u8; 72], vec![2u8; 33]]),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(50_000),
            script_pubkey: ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([9; 20])),
        }],
    }
}

fn chain_source_message(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::ChainSource(m)) => m,
        other => panic!("expected Error::ChainSource, got {other:?}"),
    }
}

fn rate(fees: &Fees, t: ConfirmationTarget) -> u32 {
    fees.get_est_sat_per_1000_weight(t)
}

#[test]
fn sat_per_vb_conversion_rounds_up_exactly() {
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(1.027), Some(257)); // 256.75
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(87.882), Some(21_971)); // 21970.5
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(1.0), Some(250));
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(0.001), Some(1)); // 0.25
                                                                  // Exact products that f64 lands a hair above.
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(8.06), Some(2015));
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(8.028), Some(2007));
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(16.1), Some(4025));
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(32.02), Some(8005));
    // Every 3-decimal rate up to 2000 sat/vB converts to ceil(k * 250 / 1000).
    for k in 1u64..2_000_000 {
        let v: f64 = format!("{}.{:03}", k / 1000, k % 1000).parse().unwrap();
        assert_eq!(
            esplora_sat_per_vb_to_sat_per_kw(v),
            Some((k * 250).div_ceil(1000) as u32),
            "{v} sat/vB"
        );
    }
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(0.0), None);
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(-1.0), None);
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(f64::NAN), None);
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(f64::INFINITY), None);
    assert_eq!(esplora_sat_per_vb_to_sat_per_kw(1e300), Some(u32::MAX));
}

#[tokio::test]
async fn update_fees_converts_maps_targets_and_floors() {
    bounded(async {
        let server = MockEsplora::start(|r| match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/fee-estimates") => (200, JSON, FEE_ESTIMATES.into()),
            _ => not_found(),
        })
        .await;
        let chain = esplora(server.url());
        chain.update_fees().await.expect("update_fees");
        let fees = &chain.fees;
        use ConfirmationTarget::*;
        // Target 1: 87.882 sat/vB * 250 = 21970.5, rounded up.
        assert_eq!(rate(fees, MaximumFeeEstimate), 21_971);
        // Target 6: 68.285 * 250 = 17071.25.
        assert_eq!(rate(fees, UrgentOnChainSweep), 17_072);
        // Target 12: 16.1 * 250 = 4025 exactly.
        assert_eq!(rate(fees, OutputSpendingFee), 4_025);
        assert_eq!(rate(fees, NonAnchorChannelFee), 4_025);
        // Target 144 and 1008: 1.027 * 250 = 256.75.
        assert_eq!(rate(fees, ChannelCloseMinimum), 257);
        assert_eq!(rate(fees, AnchorChannelFee), 257);
        // Peers' minimum: 250 below our view, but never under the 253 floor.
        assert_eq!(rate(fees, MinAllowedAnchorChannelRemoteFee), 253);
        assert_eq!(rate(fees, MinAllowedNonAnchorChannelRemoteFee), 253);
        assert_eq!(server.paths(), vec!["GET /fee-estimates"]);
    })
    .await
}

#[tokio::test]
async fn update_fees_floors_low_rates_and_keeps_fallbacks_when_empty() {
    bounded(async {
        let body = Arc::new(Mutex::new(String::from("{}")));
        let served = Arc::clone(&body);
        let server = MockEsplora::start(move |r| match r.path.as_str() {
            "/fee-estimates" => (200, JSON, served.lock().unwrap().clone()),
            _ => not_found(),
        })
        .await;
        let chain = esplora(server.url());
        // An Esplora whose bitcoind has no estimates (regtest, fresh node) answers `{}`.
        chain.update_fees().await.expect("empty estimates");
        use ConfirmationTarget::*;
        assert_eq!(rate(&chain.fees, MaximumFeeEstimate), 5_000);
        assert_eq!(rate(&chain.fees, NonAnchorChannelFee), 1_000);
        assert_eq!(rate(&chain.fees, AnchorChannelFee), 253);

        // An empty mempool: 1 sat/vB (250 sat/kWU) everywhere, which is under LDK's floor.
        // Zero and negative entries are ignored, not turned into zero rates.
        *body.lock().unwrap() =
            r#"{"1":1.0,"2":1.0,"6":1,"12":1.0,"144":1.0,"504":0.0,"1008":-1.0}"#.into();
        chain.update_fees().await.expect("low estimates");
        for t in [
            MaximumFeeEstimate,
            UrgentOnChainSweep,
            OutputSpendingFee,
            NonAnchorChannelFee,
            ChannelCloseMinimum,
            AnchorChannelFee,
            MinAllowedAnchorChannelRemoteFee,
            MinAllowedNonAnchorChannelRemoteFee,
        ] {
            assert_eq!(rate(&chain.fees, t), 253, "{t:?}");
        }
    })
    .await
}

#[tokio::test]
async fn tip_returns_served_height_and_hash() {
    bounded(async {
        let server = MockEsplora::start(|r| match r.path.as_str() {
            "/blocks/tip/height" => (200, TEXT, "840000".into()),
            "/blocks/tip/hash" => (200, TEXT, HASH_840000.into()),
            "/block-height/840000" => (200, TEXT, HASH_840000.into()),
            _ => not_found(),
        })
        .await;
        let chain = esplora(server.url());
        let tip = chain.tip().await.expect("tip");
        assert_eq!(tip.height, 840_000);
        assert_eq!(tip.block_hash, HASH_840000.parse::<BlockHash>().unwrap());
    })
    .await
}

/// A block arriving between the two requests must not pair one block's hash with the next
/// block's height.
#[tokio::test]
async fn tip_is_consistent_when_a_block_arrives_mid_call() {
    bounded(async {
        let calls = Arc::new(Mutex::new(0u32));
        let server = {
            let calls = Arc::clone(&calls);
            MockEsplora::start(move |r| {
                let mut n = calls.lock().unwrap();
                *n += 1;
                // Block 840,001 is found right after the first request is answered.
                let new_tip = *n > 1;
                match r.path.as_str() {
                    "/blocks/tip/height" if new_tip => (200, TEXT, "840001".into()),
                    "/blocks/tip/height" => (200, TEXT, "840000".into()),
                    "/blocks/tip/hash" if new_tip => (200, TEXT, HASH_840001.into()),
                    "/blocks/tip/hash" => (200, TEXT, HASH_840000.into()),
                    "/block-height/840000" => (200, TEXT, HASH_840000.into()),
                    "/block-height/840001" => (200, TEXT, HASH_840001.into()),
                    _ => not_found(),
                }
            })
            .await
        };
        let chain = esplora(server.url());
        let tip = chain.tip().await.expect("tip");
        let expected = match tip.height {
            840_000 => HASH_840000,
            840_001 => HASH_840001,
            h => panic!("unexpected height {h}"),
        };
        assert_eq!(
            tip.block_hash,
            expected.parse::<BlockHash>().unwrap(),
            "hash and height of different blocks; requests: {:?}",
            server.paths()
        );
    })
    .await
}

#[tokio::test]
async fn broadcast_posts_hex_and_returns_txid() {
    bounded(async {
        let server = MockEsplora::start(|r| match (r.method.as_str(), r.path.as_str()) {
            ("POST", "/tx") => match bitcoin::consensus::encode::deserialize_hex::<Transaction>(
                r.body.trim(),
            ) {
                Ok(tx) => (200, TEXT, tx.compute_txid().to_string()),
                Err(e) => (
                    400,
                    TEXT,
                    format!("sendrawtransaction RPC error: {{\"code\":-22,\"message\":\"TX decode failed {e}\"}}"),
                ),
            },
            _ => not_found(),
        })
        .await;
        let chain = esplora(server.url());
        let tx = sample_tx();
        let txid = chain.broadcast(&tx).await.expect("broadcast");
        assert_eq!(txid, tx.compute_txid());
        let reqs = server.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!((reqs[0].method.as_str(), reqs[0].path.as_str()), ("POST", "/tx"));
        assert_eq!(reqs[0].body, bitcoin::consensus::encode::serialize_hex(&tx));
    })
    .await
}

#[tokio::test]
async fn broadcast_of_known_tx_counts_as_success() {
    bounded(async {
        // What electrs relays from bitcoind's sendrawtransaction, old and new wordings.
        let answers = [
            r#"sendrawtransaction RPC error: {"code":-27,"message":"Transaction outputs already in utxo set"}"#,
            r#"sendrawtransaction RPC error: {"code":-27,"message":"Transaction already in block chain"}"#,
            r#"sendrawtransaction RPC error: {"code":-26,"message":"txn-already-in-mempool"}"#,
            r#"sendrawtransaction RPC error: {"code":-26,"message":"txn-already-known"}"#,
        ];
        let next = Arc::new(Mutex::new(0usize));
        let server = {
            let next = Arc::clone(&next);
            MockEsplora::start(move |_| {
                let mut i = next.lock().unwrap();
                let a = answers[*i % answers.len()];
                *i += 1;
                (400, TEXT, a.into())
            })
            .await
        };
        let chain = esplora(server.url());
        let tx = sample_tx();
        for a in answers {
            assert_eq!(chain.broadcast(&tx).await, Ok(tx.compute_txid()), "{a}");
        }
        assert_eq!(server.requests().len(), answers.len());
    })
    .await
}

#[tokio::test]
async fn broadcast_rejection_carries_the_servers_message() {
    bounded(async {
        let answer =
            r#"sendrawtransaction RPC error: {"code":-25,"message":"bad-txns-inputs-missingorspent"}"#;
        let server = MockEsplora::start(move |_| (400, TEXT, answer.into())).await;
        let chain = esplora(server.url());
        let tx = sample_tx();
        let msg = chain_source_message(chain.broadcast(&tx).await);
        assert!(msg.contains(answer), "{msg}");
        assert!(msg.contains("400"), "{msg}");
        assert!(msg.contains(&tx.compute_txid().to_string()), "{msg}");
    })
    .await
}

#[tokio::test]
async fn broadcast_http_500_is_an_error_and_not_retried() {
    bounded(async {
        let server = MockEsplora::start(|_| (500, TEXT, "internal error".into())).await;
        let chain = esplora(server.url());
        let msg = chain_source_message(chain.broadcast(&sample_tx()).await);
        assert!(msg.contains("HTTP 500: internal error"), "{msg}");
        // esplora-client retries GETs only; a POST is sent once.
        assert_eq!(server.requests().len(), 1);
    })
    .await
}

#[tokio::test]
async fn server_down_is_a_chain_source_error() {
    bounded(async {
        let addr = closed_port().await;
        let chain = esplora(format!("http://{addr}"));
        let started = Instant::now();
        chain_source_message(chain.tip().await);
        chain_source_message(chain.update_fees().await);
        chain_source_message(chain.broadcast(&sample_tx()).await);
        // Refused connections fail at once; they are not retried with backoff.
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            rate(&chain.fees, ConfirmationTarget::MaximumFeeEstimate),
            5_000
        );
    })
    .await
}

#[tokio::test]
async fn malformed_answers_are_chain_source_errors() {
    bounded(async {
        let server = MockEsplora::start(|r| match r.path.as_str() {
            "/fee-estimates" => (200, TEXT, "<html>Bad Gateway</html>".into()),
            "/blocks/tip/height" => (200, TEXT, "not a number".into()),
            _ => not_found(),
        })
        .await;
        let chain = esplora(server.url());
        chain_source_message(chain.update_fees().await);
        chain_source_message(chain.tip().await);
        // Fee estimates keep their fallbacks.
        assert_eq!(
            rate(&chain.fees, ConfirmationTarget::MaximumFeeEstimate),
            5_000
        );

        // Valid JSON of the wrong shape.
        for body in [
            r#"[87.882, 1.027]"#,
            r#"{"1":"fast"}"#,
            r#"{"one":1.0}"#,
            "",
        ] {
            let server = MockEsplora::start(move |_| (200, JSON, body.into())).await;
            let chain = esplora(server.url());
            chain_source_message(chain.update_fees().await);
        }

        // A tip hash that is not one.
        let server = MockEsplora::start(|r| match r.path.as_str() {
            "/blocks/tip/height" => (200, TEXT, "840000".into()),
            _ => (200, TEXT, "zz".into()),
        })
        .await;
        chain_source_message(esplora(server.url()).tip().await);
    })
    .await
}

#[tokio::test]
async fn not_found_is_a_chain_source_error() {
    bounded(async {
        let server = MockEsplora::start(|_| not_found()).await;
        let chain = esplora(server.url());
        let msg = chain_source_message(chain.tip().await);
        assert!(msg.contains("HTTP 404"), "{msg}");
        chain_source_message(chain.update_fees().await);
    })
    .await
}

#[tokio::test]
async fn transient_503_is_retried() {
    bounded(async {
        let calls = Arc::new(Mutex::new(0u32));
        let server = {
            let calls = Arc::clone(&calls);
            MockEsplora::start(move |_| {
                let mut n = calls.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    (503, TEXT, "try again".into())
                } else {
                    (200, JSON, FEE_ESTIMATES.into())
                }
            })
            .await
        };
        let chain = esplora(server.url());
        chain.update_fees().await.expect("retried");
        assert_eq!(
            rate(&chain.fees, ConfirmationTarget::MaximumFeeEstimate),
            21_971
        );
        assert_eq!(server.requests().len(), 2);
    })
    .await
}

/// A server that keeps failing with 500: esplora-client retries GETs 6 times with doubling
/// backoff from 256 ms (about 16 s in all), then the error surfaces.
#[tokio::test]
async fn persistent_http_500_is_a_chain_source_error() {
    bounded(async {
        let server = MockEsplora::start(|_| (500, TEXT, "internal error".into())).await;
        let chain = esplora(server.url());
        let msg = chain_source_message(chain.update_fees().await);
        assert!(msg.contains("HTTP 500: internal error"), "{msg}");
        assert_eq!(server.requests().len(), 7);
        assert_eq!(
            rate(&chain.fees, ConfirmationTarget::MaximumFeeEstimate),
            5_000
        );
    })
    .await
}

/// The builder asks for the tip on a throwaway runtime, and the node then uses the same
/// client (and its connection pool) on its own runtime. A kept-alive connection from the
/// first runtime must not break requests on the second.
#[test]
fn client_survives_the_runtime_it_first_ran_on() {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = server_rt.block_on(MockEsplora::start(|r| match r.path.as_str() {
        "/blocks/tip/height" => (200, TEXT, "840000".into()),
        "/block-height/840000" => (200, TEXT, HASH_840000.into()),
        "/fee-estimates" => (200, JSON, FEE_ESTIMATES.into()),
        "/tx" => (200, TEXT, sample_tx().compute_txid().to_string()),
        _ => not_found(),
    }));
    let chain = esplora(server.url());

    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tip = first.block_on(bounded(chain.tip())).expect("tip");
    assert_eq!(tip.height, 840_000);
    drop(first);

    let second = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    second.block_on(bounded(async {
        chain
            .update_fees()
            .await
            .expect("fees on the second runtime");
        chain
            .broadcast(&sample_tx())
            .await
            .expect("broadcast on the second runtime");
        chain.tip().await.expect("tip on the second runtime");
    }));
    drop(second);
    drop(server);
    drop(server_rt);
}

/// The mock server really stops: once dropped, its port refuses connections.
#[tokio::test]
async fn mock_server_stops_when_dropped() {
    bounded(async {
        let server = MockEsplora::start(|r| match r.path.as_str() {
            "/blocks/tip/height" => (200, TEXT, "840000".into()),
            "/block-height/840000" => (200, TEXT, HASH_840000.into()),
            _ => not_found(),
        })
        .await;
        let addr = server.addr;
        esplora(server.url()).tip().await.expect("tip");
        drop(server);
        // Aborting is asynchronous; wait (bounded) for the listener to go away.
        let mut refused = false;
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "server still accepting after drop");
        chain_source_message(esplora(format!("http://{addr}")).update_fees().await);
    })
    .await
}

/// A synthetic regtest chain for the sync test: the real regtest genesis, then headers that
/// link by hash (no proof of work; neither LDK's transaction sync nor BDK checks it), and the
/// confirmed transactions of each script, as Esplora's `Tx` JSON.
struct MockChain {
    headers: Vec<bitcoin::block::Header>,
    txs_by_scripthash: HashMap<String, Vec<serde_json::Value>>,
}

impl MockChain {
    fn new(height: u32) -> Self {
        let mut chain = Self {
            headers: vec![bitcoin::constants::genesis_block(Network::Regtest).header],
            txs_by_scripthash: HashMap::new(),
        };
        for _ in 0..height {
            chain.mine();
        }
        chain
    }

    fn tip_height(&self) -> u32 {
        (self.headers.len() - 1) as u32
    }

    fn hash(&self, h: u32) -> BlockHash {
        self.headers[h as usize].block_hash()
    }

    fn mine(&mut self) -> u32 {
        let prev = *self.headers.last().unwrap();
        let n = self.headers.len() as u32;
        self.headers.push(bitcoin::block::Header {
            version: prev.version,
            prev_blockhash: prev.block_hash(),
            merkle_root: bitcoin::TxMerkleNode::from_byte_array([n as u8; 32]),
            time: prev.time + 600,
            bits: prev.bits,
            nonce: n,
        });
        n
    }

    fn height_of(&self, hash: &str) -> Option<u32> {
        (0..=self.tip_height()).find(|h| self.hash(*h).to_string() == hash)
    }

    /// `/blocks`: the ten latest blocks, newest first.
    fn block_infos(&self) -> serde_json::Value {
        let tip = self.tip_height();
        let infos: Vec<serde_json::Value> = (tip.saturating_sub(9)..=tip)
            .rev()
            .map(|h| {
                let hd = &self.headers[h as usize];
                serde_json::json!({
                    "id": hd.block_hash().to_string(),
                    "height": h,
                    "version": hd.version.to_consensus(),
                    "timestamp": hd.time,
                    "tx_count": 1,
                    "size": 250,
                    "weight": 1000,
                    "merkle_root": hd.merkle_root.to_string(),
                    "previousblockhash": if h == 0 { serde_json::Value::Null } else { hd.prev_blockhash.to_string().into() },
                    "mediantime": hd.time,
                    "nonce": hd.nonce,
                    "bits": hd.bits.to_consensus(),
                    "difficulty": 4.6565423739069247e-10,
                })
            })
            .collect();
        serde_json::Value::Array(infos)
    }

    /// Confirms `tx` (spending a made-up segwit output) in a new block and indexes it under
    /// the scripts of its outputs.
    fn confirm(&mut self, tx: &Transaction) {
        let height = self.mine();
        let hd = self.headers[height as usize];
        let json = serde_json::json!({
            "txid": tx.compute_txid().to_string(),
            "version": tx.version.0,
            "locktime": tx.lock_time.to_consensus_u32(),
            "vin": tx.input.iter().map(|i| serde_json::json!({
                "txid": i.previous_output.txid.to_string(),
                "vout": i.previous_output.vout,
                "prevout": {
                    "scriptpubkey": "0014".to_string() + &"09".repeat(20),
                    "scriptpubkey_type": "v0_p2wpkh",
                    "value": 200_000,
                },
                "scriptsig": "",
                "scriptsig_asm": "",
                "witness": i.witness.iter().map(bitcoin::hex::DisplayHex::to_lower_hex_string).collect::<Vec<_>>(),
                "is_coinbase": false,
                "sequence": i.sequence.0,
            })).collect::<Vec<_>>(),
            "vout": tx.output.iter().map(|o| serde_json::json!({
                "scriptpubkey": bitcoin::hex::DisplayHex::to_lower_hex_string(o.script_pubkey.as_bytes()),
                "scriptpubkey_type": "v0_p2wpkh",
                "value": o.value.to_sat(),
            })).collect::<Vec<_>>(),
            "size": tx.total_size(),
            "weight": tx.weight().to_wu(),
            "fee": 200_000 - tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>(),
            "status": {
                "confirmed": true,
                "block_height": height,
                "block_hash": hd.block_hash().to_string(),
                "block_time": hd.time,
            },
        });
        for o in &tx.output {
            let sh = format!(
                "{:x}",
                bitcoin::hashes::sha256::Hash::hash(o.script_pubkey.as_bytes())
            );
            self.txs_by_scripthash
                .entry(sh)
                .or_default()
                .push(json.clone());
        }
    }

    fn answer(&self, r: &Request) -> Reply {
        let path = r.path.as_str();
        let tip = self.tip_height();
        if path == "/blocks/tip/height" {
            return (200, TEXT, tip.to_string());
        }
        if path == "/blocks/tip/hash" {
            return (200, TEXT, self.hash(tip).to_string());
        }
        if path == "/blocks" {
            return (200, JSON, self.block_infos().to_string());
        }
        if path == "/fee-estimates" {
            return (200, JSON, "{}".into());
        }
        if let Some(h) = path.strip_prefix("/block-height/") {
            return match h.parse::<u32>() {
                Ok(h) if h <= tip => (200, TEXT, self.hash(h).to_string()),
                _ => (404, TEXT, "Block not found".into()),
            };
        }
        if let Some(rest) = path.strip_prefix("/block/") {
            if let Some((hash, what)) = rest.split_once('/') {
                if let Some(h) = self.height_of(hash) {
                    match what {
                        "header" => {
                            return (
                                200,
                                TEXT,
                                bitcoin::consensus::encode::serialize_hex(
                                    &self.headers[h as usize],
                                ),
                            )
                        }
                        "status" => {
                            let next = if h < tip {
                                self.hash(h + 1).to_string().into()
                            } else {
                                serde_json::Value::Null
                            };
                            let s = serde_json::json!({
                                "in_best_chain": true, "height": h, "next_best": next,
                            });
                            return (200, JSON, s.to_string());
                        }
                        _ => {}
                    }
                }
            }
            return (404, TEXT, "Block not found".into());
        }
        if let Some(rest) = path.strip_prefix("/scripthash/") {
            if let Some(sh) = rest.strip_suffix("/txs") {
                let txs = self.txs_by_scripthash.get(sh).cloned().unwrap_or_default();
                return (200, JSON, serde_json::Value::Array(txs).to_string());
            }
        }
        not_found()
    }
}

/// A whole node on the Esplora backend: built (the birthday comes from the served tip),
/// started (fee update and a first sync round through LDK's transaction sync and BDK's Esplora
/// sync), then an incoming payment is confirmed on the mock chain and a second sync finds it.
#[test]
fn node_syncs_from_esplora_and_sees_a_confirmed_deposit() {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let chain = Arc::new(Mutex::new(MockChain::new(100)));
    let server = {
        let chain = Arc::clone(&chain);
        server_rt.block_on(MockEsplora::start(move |r| chain.lock().unwrap().answer(r)))
    };
    let dir = tempfile::tempdir().unwrap();
    let node = crate::Builder::new()
        .network(Network::Regtest)
        .storage_dir(dir.path())
        .chain_source_esplora(server.url())
        .build()
        .expect("build");
    assert_eq!(node.inner.wallet.best_block().height, 100);
    node.start().expect("start: first sync round");
    assert!(node.last_sync_unix().is_some());
    let first_round = server.paths();
    assert!(
        first_round.iter().any(|p| p == "GET /blocks"),
        "{first_round:?}"
    );
    // LDK's transaction sync moved its listeners to the served tip.
    let tip_hash = chain.lock().unwrap().hash(100);
    for p in [
        "GET /blocks/tip/hash".to_string(),
        format!("GET /block/{tip_hash}/header"),
        format!("GET /block/{tip_hash}/status"),
    ] {
        assert!(first_round.contains(&p), "{p} not in {first_round:?}");
    }
    assert_eq!(node.inner.channel_manager.current_best_block().height, 100);

    let addr = node.new_onchain_address().expect("address");
    let mut deposit = sample_tx();
    deposit.output[0] = TxOut {
        value: Amount::from_sat(100_000),
        script_pubkey: addr.script_pubkey(),
    };
    chain.lock().unwrap().confirm(&deposit);
    node.sync_wallets().expect("second sync round");

    let balance = node.onchain_balance();
    assert_eq!(balance.confirmed_sat, 100_000, "{balance:?}");
    assert_eq!(balance.unconfirmed_sat, 0);
    assert_eq!(node.inner.wallet.best_block().height, 101);
    let sh = format!(
        "{:x}",
        bitcoin::hashes::sha256::Hash::hash(addr.script_pubkey().as_bytes())
    );
    assert!(server
        .paths()
        .contains(&format!("GET /scripthash/{sh}/txs")));
    let mut received = None;
    for _ in 0..10 {
        match node.next_event() {
            Some(crate::Event::OnchainFundsReceived { txid, amount_sat }) => {
                received = Some((txid, amount_sat));
                break;
            }
            Some(_) => node.event_handled().expect("event handled"),
            None => break,
        }
    }
    assert_eq!(received, Some((deposit.compute_txid(), 100_000)));

    node.stop().expect("stop");
    drop(node);
    drop(server);
    drop(server_rt);
}
