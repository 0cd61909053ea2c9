//! Browser test: headless Chromium (Debian's `chromium`, installed with apt-get when missing and
//! running as root; otherwise the test is skipped with a message) loads the dashboard, creates an
//! invoice through the form, the customer node pays it, and the page shows it paid without a
//! reload. A screenshot is saved as `target/dashboard.png`.
//!
//! Chromium is driven over the DevTools protocol with a minimal WebSocket client below.

#[path = "../examples/merchant/regtest.rs"]
mod regtest;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lightkeeper::api::app::App;
use serde_json::{json, Value};

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Chromium, installed with apt-get when missing and allowed; `None` means skip.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = find_chromium() {
        return Some(p);
    }
    if !is_root() {
        eprintln!("SKIPPED: chromium is not installed and installing it needs root (apt-get install chromium)");
        return None;
    }
    eprintln!("[dashboard] installing chromium with apt-get");
    let ok = Command::new("apt-get")
        .arg("update")
        .arg("-qq")
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: apt-get install chromium failed");
        return None;
    }
    find_chromium()
}

/// A minimal blocking WebSocket client, enough for the DevTools protocol.
struct Ws {
    s: TcpStream,
    next_id: u64,
}

impl Ws {
    fn connect(url: &str) -> Ws {
        let rest = url.strip_prefix("ws://").expect("ws url");
        let (host, path) = rest.split_once('/').unwrap();
        let mut s = TcpStream::connect(host).expect("connect devtools");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).expect("handshake");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "websocket handshake: {head}"
        );
        Ws { s, next_id: 0 }
    }

    fn send(&mut self, text: &str) {
        let p = text.as_bytes();
        let mut f = vec![0x81u8];
        match p.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        f.extend_from_slice(&mask);
        f.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).unwrap();
    }

    fn recv(&mut self) -> String {
        let mut msg = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.s.read_exact(&mut h).expect("frame");
            let fin = h[0] & 0x80 != 0;
            let op = h[0] & 0x0f;
            let mut len = (h[1] & 0x7f) as u64;
            if len == 126 {
                let mut e = [0u8; 2];
                self.s.read_exact(&mut e).unwrap();
                len = u16::from_be_bytes(e) as u64;
            } else if len == 127 {
                let mut e = [0u8; 8];
                self.s.read_exact(&mut e).unwrap();
                len = u64::from_be_bytes(e);
            }
            let mut data = vec![0u8; len as usize];
            self.s.read_exact(&mut data).unwrap();
            match op {
                0x8 => panic!("devtools closed the connection"),
                0x9 | 0xA => continue, // ping/pong
                _ => msg.extend_from_slice(&data),
            }
            if fin {
                return String::from_utf8_lossy(&msg).into_owned();
            }
        }
    }

    /// Sends a command and waits for its answer (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params) {
            Ok(v) => v,
            Err(v) => panic!("{method}: {v}"),
        }
    }

    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let v: Value = serde_json::from_str(&self.recv()).unwrap();
            if v["id"] == id {
                return if v["error"].is_null() {
                    Ok(v["result"].clone())
                } else {
                    Err(v)
                };
            }
        }
    }

    /// Evaluates `js` in the page. The page navigates once by itself (it moves the token from
    /// the URL fragment to a cookie and reloads), so an evaluation that loses its context is
    /// retried, a bounded number of times.
    fn eval(&mut self, js: &str) -> Value {
        let params = json!({"expression": js, "returnByValue": true, "awaitPromise": true});
        for _ in 0..50 {
            match self.try_call("Runtime.evaluate", params.clone()) {
                Ok(r) => return r["result"]["value"].clone(),
                Err(e)
                    if e.to_string().contains("navigated") || e.to_string().contains("context") =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("Runtime.evaluate: {e}"),
            }
        }
        panic!("Runtime.evaluate: the page kept navigating for 5 s")
    }

    fn wait_for(&mut self, what: &str, js: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(js);
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; page text:\n{}",
                self.eval("document.body ? document.body.innerText : ''")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `GET path` on the DevTools HTTP server (which keeps connections open: read by length).
fn http_get(hostport: &str, path: &str) -> String {
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("devtools http");
        assert!(n > 0, "devtools closed early");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= len {
                return body[..len].to_string();
            }
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_creates_invoice_and_shows_it_paid_live() {
    let Some(chrome) = tokio::task::spawn_blocking(chromium).await.unwrap() else {
        return;
    };
    let world =
        tokio::task::spawn_blocking(|| regtest::start(500_000, &|m| eprintln!("[setup] {m}")))
            .await
            .unwrap();
    let app = App::start(world.merchant.clone(), regtest::test_config())
        .await
        .unwrap();
    let url = app.url();
    let token = app.admin_token.clone().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(&chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let stderr = child.stderr.take().unwrap();
    let customer = world.customer.clone();
    let shot = target_dir().join("dashboard.png");
    let shot2 = shot.clone();
    let result = tokio::task::spawn_blocking(move || {
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(u) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(u.trim().to_string());
                }
            }
        });
        let browser_ws = rx.recv_timeout(Duration::from_secs(60)).expect("chromium did not start its DevTools server");
        let hostport = browser_ws.trim_start_matches("ws://").split('/').next().unwrap().to_string();
        let body = http_get(&hostport, "/json/list");
        let targets: Value = serde_json::from_str(&body).expect("json/list");
        let page = targets.as_array().unwrap().iter().find(|t| t["type"] == "page").expect("a page target");
        let mut ws = Ws::connect(page["webSocketDebuggerUrl"].as_str().unwrap());
        ws.call("Page.enable", json!({}));
        // The login page turns the #token fragment into the session cookie and opens the dashboard.
        ws.call("Page.navigate", json!({"url": format!("{url}/#token={token}")}));
        ws.wait_for("the dashboard", "document.getElementById('create') ? 1 : 0", Duration::from_secs(30));
        ws.wait_for("the live stream", "document.getElementById('live').textContent == 'live'", Duration::from_secs(15));
        ws.eval("window.__noReload = 42");
        ws.eval(
            "(()=>{const f=document.getElementById('create');f.numero.value='WEB-1';f.amount.value='10.00';\
             f.currency.value='EUR';f.description.value='browser test';document.getElementById('create-btn').click();return 1})()",
        );
        let bolt11 = ws.wait_for(
            "the BOLT11 string",
            "document.getElementById('created-bolt11').value",
            Duration::from_secs(15),
        );
        let bolt11 = bolt11.as_str().unwrap().to_string();
        assert!(bolt11.starts_with("lnbcrt"), "{bolt11}");
        ws.wait_for("the QR code", "document.querySelector('#created-qr svg') ? 1 : 0", Duration::from_secs(10));
        assert_eq!(ws.eval("document.getElementById('created-status').textContent"), "pending");
        customer.pay_invoice(&bolt11, None, None).expect("customer pays");
        ws.wait_for("the invoice shown paid", "document.getElementById('created-status').textContent == 'paid'", Duration::from_secs(30));
        ws.wait_for(
            "the invoice list showing it paid",
            "document.querySelector('[data-invoice=\"WEB-1\"] .st-paid') ? 1 : 0",
            Duration::from_secs(30),
        );
        assert_eq!(ws.eval("window.__noReload"), 42, "the page must not reload");
        let png = ws.call("Page.captureScreenshot", json!({"format": "png"}));
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png["data"].as_str().unwrap()).unwrap();
        std::fs::create_dir_all(shot2.parent().unwrap()).unwrap();
        std::fs::write(&shot2, bytes).unwrap();
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    app.stop().await;
    tokio::task::spawn_blocking(move || world.stop())
        .await
        .unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    eprintln!("[dashboard] screenshot: {}", shot.display());
}
