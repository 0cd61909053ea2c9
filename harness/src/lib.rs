//! Regtest harness for Lightkeeper's tests, examples and benchmarks.
//!
//! - [`bitcoind_exe`] finds `bitcoind` (`BITCOIND_EXE`, `PATH`, the cache) or builds it once
//!   from the Bitcoin Core source vendored in crates.io's `libbitcoinkernel-sys`.
//! - [`Regtest`] spawns bitcoind on loopback, mines, and builds funded [`Node`]s on free
//!   loopback ports in temporary directories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lightkeeper::{Builder, ChannelDetails, Event, Network, Node};

pub use corepc_node;
pub use tempfile::TempDir;

/// Where built binaries are cached: `LIGHTKEEPER_CACHE_DIR`, else `$XDG_CACHE_HOME/lightkeeper`,
/// else `~/.cache/lightkeeper`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LIGHTKEEPER_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("lightkeeper");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("lightkeeper")
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The path of a `bitcoind` binary, building it on first use.
///
/// Order: `BITCOIND_EXE`; `bitcoind` on `PATH`; the cache; else `scripts/build-bitcoind.sh`,
/// which installs cmake/boost/libevent with apt when run as root, fetches the
/// `libbitcoinkernel-sys` source through cargo and builds `bitcoind` (about 8 minutes on two
/// cores). A file lock makes concurrent test binaries wait for one build.
///
/// # Panics
/// If no binary can be found or built; the message says what to run.
pub fn bitcoind_exe() -> PathBuf {
    if let Some(p) = std::env::var_os("BITCOIND_EXE") {
        return PathBuf::from(p);
    }
    if let Some(p) = which("bitcoind") {
        return p;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join("build-bitcoind.sh");
    let cache = cache_dir();
    eprintln!(
        "[harness] bitcoind not found; building it (cached in {})",
        cache.display()
    );
    let out = Command::new("bash")
        .arg(&script)
        .arg(&cache)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    if !out.status.success() {
        panic!(
            "building bitcoind failed ({}); see the log above, or set BITCOIND_EXE to a bitcoind binary",
            out.status
        );
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "build script did not produce bitcoind at {}",
        path.display()
    );
    path
}

struct StderrLogger(log::LevelFilter, Instant);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let t = self.1.elapsed().as_secs_f64() * 1e3;
            eprintln!(
                "[{t:10.3} ms {:?}] {} {}",
                std::thread::current().id(),
                r.level(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

/// Sends the library's and LDK's logs to stderr at the level in `LIGHTKEEPER_LOG`
/// (`error`..`trace`); does nothing when it is unset.
pub fn init_logging() {
    let Some(level) = std::env::var("LIGHTKEEPER_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
    else {
        return;
    };
    if log::set_boxed_logger(Box::new(StderrLogger(level, Instant::now()))).is_ok() {
        log::set_max_level(level);
    }
}

/// A bitcoind on regtest, spawned on loopback, stopped on drop.
pub struct Regtest {
    /// The bitcoind process and its RPC client.
    pub bitcoind: corepc_node::Node,
    burn_address: String,
}

impl Default for Regtest {
    fn default() -> Self {
        Self::start()
    }
}

impl Regtest {
    /// Spawns bitcoind (regtest, no wallet, no p2p) and mines the first 101 blocks.
    pub fn start() -> Self {
        init_logging();
        let exe = bitcoind_exe();
        let mut conf = corepc_node::Conf::default();
        conf.wallet = None;
        conf.args = vec![
            "-regtest",
            "-txindex=0",
            "-rpcworkqueue=64",
            "-rpcthreads=8",
        ];
        let bitcoind = corepc_node::Node::with_conf(&exe, &conf)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        // An address nobody controls, for maturing coinbases.
        let burn_address = bitcoin::Address::p2wsh(
            bitcoin::Script::from_bytes(&[0x6a]),
            bitcoin::Network::Regtest,
        )
        .to_string();
        let rt = Self {
            bitcoind,
            burn_address,
        };
        rt.mine(101);
        rt
    }

    /// Host, port, user and password for [`Builder::chain_source_bitcoind_rpc`].
    pub fn rpc_params(&self) -> (String, u16, String, String) {
        let cookie = self
            .bitcoind
            .params
            .get_cookie_values()
            .ok()
            .flatten()
            .expect("cookie file");
        let socket = self.bitcoind.params.rpc_socket;
        (
            socket.ip().to_string(),
            socket.port(),
            cookie.user,
            cookie.password,
        )
    }

    /// Calls an RPC method and returns the raw JSON result.
    pub fn rpc(&self, method: &str, args: &[serde_json::Value]) -> serde_json::Value {
        self.bitcoind
            .client
            .call::<serde_json::Value>(method, args)
            .unwrap_or_else(|e| panic!("bitcoind {method} failed: {e}"))
    }

    /// Current block height.
    pub fn height(&self) -> u64 {
        self.rpc("getblockcount", &[]).as_u64().expect("height")
    }

    /// Mines `n` blocks to an unspendable address.
    pub fn mine(&self, n: u64) {
        self.mine_to(n, &self.burn_address.clone());
    }

    /// Mines `n` blocks paying the coinbase to `address`.
    pub fn mine_to(&self, n: u64, address: &str) {
        self.rpc("generatetoaddress", &[n.into(), address.into()]);
    }

    /// A builder for a regtest node on a free loopback port in `dir`, syncing every 100 ms.
    pub fn builder(&self, dir: &Path) -> Builder {
        let (host, port, user, pass) = self.rpc_params();
        Builder::new()
            .network(Network::Regtest)
            .storage_dir(dir)
            .chain_source_bitcoind_rpc(host, port, user, pass)
            .listening_address("127.0.0.1:0".parse().unwrap())
            .sync_interval(Duration::from_millis(100))
    }

    /// Builds and starts a node in `dir`.
    pub fn node(&self, dir: &Path) -> Node {
        let node = self.builder(dir).build().expect("build node");
        node.start().expect("start node");
        node
    }

    /// Gives `node` `blocks` coinbases (50 BTC each early on; rewards halve every 150 blocks on
    /// regtest), matures them, and waits until the node's wallet sees them.
    pub fn fund(&self, node: &Node, blocks: u64) {
        let before = node.onchain_balance().confirmed_sat;
        let addr = node.new_onchain_address().expect("address").to_string();
        self.mine_to(blocks, &addr);
        self.mine(100);
        wait_until(
            Duration::from_secs(60),
            "wallet sees matured coinbase",
            || {
                node.sync_wallets().ok();
                node.onchain_balance().confirmed_sat > before
            },
        );
    }

    /// Mines `n` blocks and waits until every node has synced to the new tip.
    pub fn mine_and_sync(&self, n: u64, nodes: &[&Node]) {
        self.mine(n);
        for node in nodes {
            node.sync_wallets().expect("sync");
        }
    }

    /// Opens a channel from `a` to `b`, confirms it, and waits until both see it usable.
    /// Returns `a`'s `user_channel_id`.
    pub fn open_channel(&self, a: &Node, b: &Node, amount_sat: u64, push_msat: u64) -> u128 {
        let addr = b.listening_addresses()[0].to_string();
        let id = a
            .open_channel(
                &b.node_id().to_string(),
                &addr,
                amount_sat,
                push_msat,
                false,
            )
            .expect("open channel");
        expect_event(a, Duration::from_secs(30), |e| {
            matches!(e, Event::ChannelPending { .. })
        });
        expect_event(b, Duration::from_secs(30), |e| {
            matches!(e, Event::ChannelPending { .. })
        });
        wait_until(Duration::from_secs(30), "funding tx in mempool", || {
            self.rpc("getrawmempool", &[])
                .as_array()
                .is_some_and(|a| !a.is_empty())
        });
        self.mine_and_sync(6, &[a, b]);
        expect_event(a, Duration::from_secs(30), |e| {
            matches!(e, Event::ChannelReady { .. })
        });
        expect_event(b, Duration::from_secs(30), |e| {
            matches!(e, Event::ChannelReady { .. })
        });
        wait_until(Duration::from_secs(30), "channel usable", || {
            channel(a, id).is_some_and(|c| c.is_usable)
        });
        id
    }
}

/// The channel with this `user_channel_id`, if open.
pub fn channel(node: &Node, user_channel_id: u128) -> Option<ChannelDetails> {
    node.list_channels()
        .into_iter()
        .find(|c| c.user_channel_id == user_channel_id)
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
///
/// # Panics
/// On timeout, naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// Waits until no channel of `nodes` has an HTLC in flight: the commitment updates are over
/// and the balances final (a payer's success can arrive before that).
///
/// # Panics
/// On timeout.
pub fn wait_htlcs_settled(nodes: &[&Node], timeout: Duration) {
    wait_until(timeout, "no HTLC in flight", || {
        nodes
            .iter()
            .flat_map(|n| n.list_channels())
            .all(|c| c.pending_htlcs == 0)
    });
}

/// Waits for the next event, acknowledges it and returns it; events that do not match `want`
/// are acknowledged and skipped, except failures, which panic with the event.
///
/// # Panics
/// On timeout.
pub fn expect_event(node: &Node, timeout: Duration, want: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(e) = node.wait_next_event_timeout(left) else {
            panic!(
                "timed out after {timeout:?} waiting for an event on {}",
                node.node_id()
            );
        };
        node.event_handled().expect("event_handled");
        if want(&e) {
            return e;
        }
        eprintln!("[harness] {} skipping event {e:?}", node.node_id());
    }
}

/// A temporary directory for a node's state.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("lightkeeper-test-")
        .tempdir()
        .expect("tempdir")
}
