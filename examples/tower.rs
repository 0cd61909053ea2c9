//! Runs a Lightkeeper watchtower.
//!
//! ```text
//! cargo run --example tower -- \
//!     --listen 127.0.0.1:9911 --db /var/lib/lightkeeper-tower/tower.sqlite \
//!     --bitcoind 127.0.0.1:8332 --rpc-user user --rpc-password pass \
//!     --admin-token "$(head -c 32 /dev/urandom | xxd -p -c 64)"
//! ```
//!
//! Register a client with `curl -X POST -H "Authorization: Bearer <admin token>"
//! -d '{"name":"shop"}' http://127.0.0.1:9911/v1/register`, then give the node
//! `ReplicaConfig::Tower { url, token }` in `Builder::monitor_replication`. Logs go to stderr
//! (`RUST_LOG`-style level in `LIGHTKEEPER_LOG`, default `info`).

use std::time::Duration;

use lightkeeper::tower::server::BitcoindRpc;
use lightkeeper::tower::{Tower, TowerConfig};

struct Stderr(log::LevelFilter);
impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "{} {} {}",
                chrono::Utc::now().to_rfc3339(),
                r.level(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn usage() -> ! {
    eprintln!(
        "usage: tower --listen ADDR --db PATH [--bitcoind HOST:PORT --rpc-user U --rpc-password P] \
         [--admin-token T] [--poll-secs N] [--quota-bytes N] [--quota-blobs N]"
    );
    std::process::exit(2)
}

fn main() {
    let level = std::env::var("LIGHTKEEPER_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    let _ = log::set_boxed_logger(Box::new(Stderr(level)));
    log::set_max_level(level);

    let mut args = std::env::args().skip(1);
    let (mut listen, mut db, mut bitcoind, mut user, mut pass) = (None, None, None, None, None);
    let mut admin = None;
    let mut poll = 5u64;
    let (mut quota_bytes, mut quota_blobs) = (None, None);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => listen = Some(val()),
            "--db" => db = Some(val()),
            "--bitcoind" => bitcoind = Some(val()),
            "--rpc-user" => user = Some(val()),
            "--rpc-password" => pass = Some(val()),
            "--admin-token" => admin = Some(val()),
            "--poll-secs" => poll = val().parse().unwrap_or_else(|_| usage()),
            "--quota-bytes" => quota_bytes = Some(val().parse().unwrap_or_else(|_| usage())),
            "--quota-blobs" => quota_blobs = Some(val().parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    let listen = listen
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| usage());
    let mut config = TowerConfig::new(listen, db.unwrap_or_else(|| usage()));
    config.admin_token = admin;
    config.poll_interval = Duration::from_secs(poll.max(1));
    if let Some(q) = quota_bytes {
        config.quota_bytes = q;
    }
    if let Some(q) = quota_blobs {
        config.quota_blobs = q;
    }
    if let Some(b) = bitcoind {
        let (host, port) = b.rsplit_once(':').unwrap_or_else(|| usage());
        config.bitcoind = Some(BitcoindRpc {
            host: host.to_string(),
            port: port.parse().unwrap_or_else(|_| usage()),
            user: user.unwrap_or_default(),
            password: pass.unwrap_or_default(),
        });
    } else {
        log::warn!("no --bitcoind: the tower stores blobs but does not watch the chain");
    }
    let tower = Tower::start(config).unwrap_or_else(|e| {
        eprintln!("cannot start the tower: {e}");
        std::process::exit(1)
    });
    log::info!("tower API at {}", tower.url());
    loop {
        std::thread::sleep(Duration::from_secs(60));
        log::info!("metrics: {:?}", tower.metrics());
    }
}
