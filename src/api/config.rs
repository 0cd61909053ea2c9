//! The merchant binary's configuration: a TOML file plus `LIGHTKEEPER_<SECTION>_<KEY>`
//! environment overrides, validated at start with errors that name the key.
//!
//! ```toml
//! [node]
//! network = "signet"          # bitcoin | testnet | signet | regtest
//! data_dir = "./lightkeeper-data"
//! listen = "0.0.0.0:9735"
//! alias = "My Shop"
//!
//! [chain]                     # exactly one source (regtest demo: none, bitcoind is started)
//! esplora_url = "https://mempool.space/signet/api"
//! bitcoind_rpc = ""           # host:port:user:password
//!
//! [api]
//! listen = "127.0.0.1:8080"
//! max_body_bytes = 65536
//!
//! [invoices]
//! default_expiry_secs = 86400
//! min_expiry_secs = 60
//! max_expiry_secs = 2592000
//!
//! [rates]
//! coingecko_enabled = true
//! coingecko_api_key = ""
//! coinmarketcap_enabled = false
//! coinmarketcap_api_key = ""
//! request_timeout_secs = 5
//! cache_ttl_secs = 300
//! max_staleness_secs = 900
//! fallback = { EUR = "60000" } # used only when every provider fails
//!
//! [reliability]
//! backend_timeout_secs = 30
//! retries = 3
//! breaker_failure_threshold = 5
//! breaker_open_secs = 30
//!
//! [webhooks]
//! url = ""                    # an endpoint registered at start when set
//! secret = ""                 # whsec_...; generated when empty
//! request_timeout_secs = 10
//! horizon_secs = 86400
//! ```
//!
//! `LIGHTKEEPER_NODE_NETWORK=testnet` overrides `node.network`;
//! `LIGHTKEEPER_RATES_FALLBACK="EUR=60000,USD=65000"` sets the fallback table. Variables of
//! other sections (`LIGHTKEEPER_LOG`, ...) are ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::rates::RatesConfig;
use crate::webhook::WebhookConfig;

/// A configuration value that cannot be used: which key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key (`invoices.min_expiry_secs`), environment variable or file.
    pub key: String,
    /// Why it is refused.
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// `bitcoin`, `testnet`, `signet` or `regtest`.
    pub network: String,
    /// Where the node keeps its database.
    pub data_dir: String,
    /// Lightning listening address (`host:port`); empty: do not listen.
    pub listen: String,
    /// Node alias.
    pub alias: String,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            network: "regtest".into(),
            data_dir: "./lightkeeper-data".into(),
            listen: "127.0.0.1:9735".into(),
            alias: "lightkeeper-merchant".into(),
        }
    }
}

/// `[chain]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainSection {
    /// Esplora base URL.
    pub esplora_url: String,
    /// bitcoind RPC as `host:port:user:password`.
    pub bitcoind_rpc: String,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Where the REST API and dashboard listen; port 0 picks a free port.
    pub listen: String,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 64 * 1024,
        }
    }
}

/// `[invoices]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InvoicesSection {
    /// Expiry when a request gives none.
    pub default_expiry_secs: u64,
    /// Shortest accepted expiry.
    pub min_expiry_secs: u64,
    /// Longest accepted expiry.
    pub max_expiry_secs: u64,
}

impl Default for InvoicesSection {
    fn default() -> Self {
        Self {
            default_expiry_secs: 24 * 3600,
            min_expiry_secs: 3600,
            max_expiry_secs: 168 * 3600,
        }
    }
}

/// `[rates]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RatesSection {
    /// Ask CoinGecko.
    pub coingecko_enabled: bool,
    /// CoinGecko demo key (optional).
    pub coingecko_api_key: String,
    /// Ask CoinMarketCap (needs a key).
    pub coinmarketcap_enabled: bool,
    /// CoinMarketCap key.
    pub coinmarketcap_api_key: String,
    /// Limit per provider request.
    pub request_timeout_secs: u64,
    /// Cache lifetime of a rate.
    pub cache_ttl_secs: u64,
    /// Oldest cached rate served when providers fail.
    pub max_staleness_secs: u64,
    /// Fixed BTC prices per currency (decimal strings), used only when every provider fails.
    pub fallback: BTreeMap<String, String>,
}

impl Default for RatesSection {
    fn default() -> Self {
        Self {
            coingecko_enabled: true,
            coingecko_api_key: String::new(),
            coinmarketcap_enabled: false,
            coinmarketcap_api_key: String::new(),
            request_timeout_secs: 5,
            cache_ttl_secs: 300,
            max_staleness_secs: 900,
            fallback: BTreeMap::new(),
        }
    }
}

/// `[reliability]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReliabilitySection {
    /// Limit of one backend call made by the API.
    pub backend_timeout_secs: u64,
    /// Retries of transient backend failures.
    pub retries: u32,
    /// Consecutive failures that open a breaker.
    pub breaker_failure_threshold: u32,
    /// How long an open breaker skips its dependency.
    pub breaker_open_secs: u64,
}

impl Default for ReliabilitySection {
    fn default() -> Self {
        Self {
            backend_timeout_secs: 30,
            retries: 3,
            breaker_failure_threshold: 5,
            breaker_open_secs: 30,
        }
    }
}

/// `[webhooks]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksSection {
    /// An endpoint registered at start (if not registered yet); empty: none.
    pub url: String,
    /// Its `whsec_` secret; empty: generated.
    pub secret: String,
    /// Limit of one delivery request.
    pub request_timeout_secs: u64,
    /// How long failed deliveries are retried before dead-lettering.
    pub horizon_secs: u64,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: String::new(),
            request_timeout_secs: 10,
            horizon_secs: 24 * 3600,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// `[node]`.
    pub node: NodeSection,
    /// `[chain]`.
    pub chain: ChainSection,
    /// `[api]`.
    pub api: ApiSection,
    /// `[invoices]`.
    pub invoices: InvoicesSection,
    /// `[rates]`.
    pub rates: RatesSection,
    /// `[reliability]`.
    pub reliability: ReliabilitySection,
    /// `[webhooks]`.
    pub webhooks: WebhooksSection,
}

/// The chain source a configuration selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainChoice {
    /// None configured (the regtest demo starts its own bitcoind).
    None,
    /// Esplora at this URL.
    Esplora(String),
    /// bitcoind RPC.
    BitcoindRpc {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// RPC user.
        user: String,
        /// RPC password.
        password: String,
    },
}

const MASK: &str = "********";

impl AppConfig {
    /// Reads `path` (if given), applies `LIGHTKEEPER_*` variables from `env` and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, variable or key and the reason.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| err(&p.display().to_string(), format!("cannot read: {e}")))?,
            None => String::new(),
        };
        let file_key = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "config".into());
        Self::from_toml_and_env(&text, &file_key, env)
    }

    /// Like [`AppConfig::load`] from TOML text.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn from_toml_and_env(
        text: &str,
        file_key: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| err(file_key, e.to_string().trim().replace('\n', " ")))?;
        let defaults = toml::Table::try_from(AppConfig::default())
            .map_err(|e| err("defaults", e.to_string()))?;
        let mut env: Vec<_> = env.into_iter().collect();
        env.sort();
        for (var, raw) in env {
            let Some(rest) = var.strip_prefix("LIGHTKEEPER_") else {
                continue;
            };
            let rest = rest.to_ascii_lowercase();
            let Some((section, key)) = rest.split_once('_') else {
                continue;
            };
            let Some(toml::Value::Table(def_section)) = defaults.get(section) else {
                continue; // LIGHTKEEPER_LOG, LIGHTKEEPER_CACHE_DIR, ...: not configuration.
            };
            let Some(def) = def_section.get(key) else {
                return Err(err(
                    &var,
                    format!(
                        "unknown key {section}.{key}; known keys: {}",
                        def_section.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            let value = match def {
                toml::Value::Integer(_) => raw
                    .trim()
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .map_err(|_| err(&var, format!("expected an integer, got {raw:?}")))?,
                toml::Value::Boolean(_) => match raw.trim() {
                    "true" | "1" | "yes" => toml::Value::Boolean(true),
                    "false" | "0" | "no" => toml::Value::Boolean(false),
                    _ => return Err(err(&var, format!("expected true or false, got {raw:?}"))),
                },
                toml::Value::Table(_) => {
                    let mut t = toml::Table::new();
                    for pair in raw.split(',').filter(|p| !p.trim().is_empty()) {
                        let (k, v) = pair.split_once('=').ok_or_else(|| {
                            err(&var, format!("expected CODE=VALUE pairs, got {pair:?}"))
                        })?;
                        t.insert(
                            k.trim().to_string(),
                            toml::Value::String(v.trim().to_string()),
                        );
                    }
                    toml::Value::Table(t)
                }
                _ => toml::Value::String(raw),
            };
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => {
                    t.insert(key.to_string(), value);
                }
                _ => return Err(err(section, "must be a table")),
            }
        }
        let config: AppConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| err(file_key, e.to_string().trim().replace('\n', " ")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`ConfigError`] for the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.network()?;
        if self.node.data_dir.trim().is_empty() {
            return Err(err("node.data_dir", "must not be empty"));
        }
        self.listen_address()?;
        self.api_listen()?;
        self.chain_choice()?;
        if self.api.max_body_bytes < 1024 || self.api.max_body_bytes > 16 * 1024 * 1024 {
            return Err(err("api.max_body_bytes", "must be within 1024..=16777216"));
        }
        let inv = &self.invoices;
        if inv.min_expiry_secs == 0 {
            return Err(err("invoices.min_expiry_secs", "must be at least 1"));
        }
        if inv.max_expiry_secs < inv.min_expiry_secs {
            return Err(err(
                "invoices.max_expiry_secs",
                "must be at least invoices.min_expiry_secs",
            ));
        }
        if inv.max_expiry_secs > u32::MAX as u64 {
            return Err(err("invoices.max_expiry_secs", "must fit in 32 bits"));
        }
        if !(inv.min_expiry_secs..=inv.max_expiry_secs).contains(&inv.default_expiry_secs) {
            return Err(err(
                "invoices.default_expiry_secs",
                format!(
                    "must be within min_expiry_secs..=max_expiry_secs ({}..={})",
                    inv.min_expiry_secs, inv.max_expiry_secs
                ),
            ));
        }
        let r = &self.rates;
        if r.request_timeout_secs == 0 {
            return Err(err("rates.request_timeout_secs", "must be at least 1"));
        }
        if r.max_staleness_secs < r.cache_ttl_secs {
            return Err(err(
                "rates.max_staleness_secs",
                "must be at least rates.cache_ttl_secs",
            ));
        }
        if r.coinmarketcap_enabled && r.coinmarketcap_api_key.trim().is_empty() {
            return Err(err(
                "rates.coinmarketcap_api_key",
                "required when rates.coinmarketcap_enabled is true",
            ));
        }
        for (code, price) in &r.fallback {
            if code.len() != 3 || !code.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(err(
                    &format!("rates.fallback.{code}"),
                    "currency must be a three-letter ISO 4217 code",
                ));
            }
            match Decimal::from_str(price.trim()) {
                Ok(d) if d > Decimal::ZERO => {}
                _ => {
                    return Err(err(
                        &format!("rates.fallback.{code}"),
                        format!("must be a positive decimal price, got {price:?}"),
                    ))
                }
            }
        }
        let rel = &self.reliability;
        if rel.backend_timeout_secs == 0 {
            return Err(err(
                "reliability.backend_timeout_secs",
                "must be at least 1",
            ));
        }
        if rel.retries > 10 {
            return Err(err("reliability.retries", "must be at most 10"));
        }
        if rel.breaker_failure_threshold == 0 {
            return Err(err(
                "reliability.breaker_failure_threshold",
                "must be at least 1",
            ));
        }
        if rel.breaker_open_secs == 0 {
            return Err(err("reliability.breaker_open_secs", "must be at least 1"));
        }
        let w = &self.webhooks;
        if !w.url.is_empty() && !w.url.starts_with("https://") && !w.url.starts_with("http://") {
            return Err(err("webhooks.url", "must be an http(s) URL"));
        }
        if !w.secret.is_empty() && !w.secret.starts_with(crate::webhook::SECRET_PREFIX) {
            return Err(err("webhooks.secret", "must start with whsec_"));
        }
        if w.request_timeout_secs == 0 || w.horizon_secs == 0 {
            return Err(err(
                "webhooks.request_timeout_secs",
                "request_timeout_secs and horizon_secs must be at least 1",
            ));
        }
        Ok(())
    }

    /// The network.
    ///
    /// # Errors
    /// [`ConfigError`] for an unknown name.
    pub fn network(&self) -> Result<bitcoin::Network, ConfigError> {
        match self.node.network.trim() {
            "bitcoin" | "mainnet" => Ok(bitcoin::Network::Bitcoin),
            "testnet" => Ok(bitcoin::Network::Testnet),
            "signet" => Ok(bitcoin::Network::Signet),
            "regtest" => Ok(bitcoin::Network::Regtest),
            other => Err(err(
                "node.network",
                format!("unknown network {other:?}; use bitcoin, testnet, signet or regtest"),
            )),
        }
    }

    /// The Lightning listening address, `None` when empty.
    ///
    /// # Errors
    /// [`ConfigError`] when it does not parse.
    pub fn listen_address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.node.listen.trim().is_empty() {
            return Ok(None);
        }
        self.node
            .listen
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| err("node.listen", "expected ip:port, e.g. 0.0.0.0:9735"))
    }

    /// The API listening address.
    ///
    /// # Errors
    /// [`ConfigError`] when it does not parse.
    pub fn api_listen(&self) -> Result<SocketAddr, ConfigError> {
        self.api
            .listen
            .trim()
            .parse()
            .map_err(|_| err("api.listen", "expected ip:port, e.g. 127.0.0.1:8080"))
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.node.data_dir.trim())
    }

    /// The configured chain source.
    ///
    /// # Errors
    /// [`ConfigError`] when both are set or `bitcoind_rpc` is malformed.
    pub fn chain_choice(&self) -> Result<ChainChoice, ConfigError> {
        let (e, b) = (
            self.chain.esplora_url.trim(),
            self.chain.bitcoind_rpc.trim(),
        );
        match (e.is_empty(), b.is_empty()) {
            (true, true) => Ok(ChainChoice::None),
            (false, false) => Err(err(
                "chain",
                "set either chain.esplora_url or chain.bitcoind_rpc, not both",
            )),
            (false, true) => {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(err("chain.esplora_url", "must be an http(s) URL"));
                }
                Ok(ChainChoice::Esplora(e.to_string()))
            }
            (true, false) => {
                let parts: Vec<&str> = b.splitn(4, ':').collect();
                if parts.len() != 4 || parts[0].is_empty() {
                    return Err(err(
                        "chain.bitcoind_rpc",
                        "expected host:port:user:password",
                    ));
                }
                let port = parts[1]
                    .parse()
                    .map_err(|_| err("chain.bitcoind_rpc", "port must be a number"))?;
                Ok(ChainChoice::BitcoindRpc {
                    host: parts[0].into(),
                    port,
                    user: parts[2].into(),
                    password: parts[3].into(),
                })
            }
        }
    }

    /// The rate aggregator settings.
    pub fn rates_config(&self) -> RatesConfig {
        let r = &self.rates;
        let mut c = RatesConfig::default();
        c.coingecko.enabled = r.coingecko_enabled;
        c.coingecko.api_key = non_empty(&r.coingecko_api_key);
        c.coinmarketcap.enabled = r.coinmarketcap_enabled;
        c.coinmarketcap.api_key = non_empty(&r.coinmarketcap_api_key);
        c.request_timeout = Duration::from_secs(r.request_timeout_secs);
        c.cache_ttl = Duration::from_secs(r.cache_ttl_secs);
        c.max_staleness = Duration::from_secs(r.max_staleness_secs);
        c.fallback_rates = r
            .fallback
            .iter()
            .filter_map(|(k, v)| Some((k.to_ascii_uppercase(), Decimal::from_str(v.trim()).ok()?)))
            .collect();
        c.breaker = self.breaker_config();
        c
    }

    /// Breaker settings from `[reliability]`.
    pub fn breaker_config(&self) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: self.reliability.breaker_failure_threshold,
            open_for: Duration::from_secs(self.reliability.breaker_open_secs),
        }
    }

    /// Webhook delivery settings.
    pub fn webhook_config(&self) -> WebhookConfig {
        WebhookConfig {
            request_timeout: Duration::from_secs(self.webhooks.request_timeout_secs),
            horizon: Duration::from_secs(self.webhooks.horizon_secs),
            ..WebhookConfig::default()
        }
    }

    /// The effective configuration as TOML with every secret replaced by `********`.
    pub fn to_masked_toml(&self) -> String {
        let mut c = self.clone();
        mask(&mut c.rates.coingecko_api_key);
        mask(&mut c.rates.coinmarketcap_api_key);
        mask(&mut c.webhooks.secret);
        if let Ok(ChainChoice::BitcoindRpc {
            host, port, user, ..
        }) = self.chain_choice()
        {
            c.chain.bitcoind_rpc = format!("{host}:{port}:{user}:{MASK}");
        }
        toml::to_string(&c).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The masked configuration as JSON (for `GET /v1/config`).
    pub fn to_masked_json(&self) -> serde_json::Value {
        toml::from_str::<toml::Table>(&self.to_masked_toml())
            .ok()
            .and_then(|t| serde_json::to_value(t).ok())
            .unwrap_or_default()
    }
}

fn mask(s: &mut String) {
    if !s.is_empty() {
        *s = MASK.into();
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn file_env_overrides_and_masking() {
        let text = r#"
[node]
network = "signet"
[chain]
bitcoind_rpc = "127.0.0.1:38332:alice:hunter2"
[rates]
coinmarketcap_enabled = true
coinmarketcap_api_key = "cmc-secret"
fallback = { EUR = "60000" }
"#;
        let c = AppConfig::from_toml_and_env(
            text,
            "merchant.toml",
            env(&[
                ("LIGHTKEEPER_NODE_NETWORK", "testnet"),
                ("LIGHTKEEPER_API_MAX_BODY_BYTES", "2048"),
                ("LIGHTKEEPER_RATES_FALLBACK", "USD=65000.5,EUR=60000"),
                ("LIGHTKEEPER_LOG", "debug"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.network().unwrap(), bitcoin::Network::Testnet);
        assert_eq!(c.api.max_body_bytes, 2048);
        assert_eq!(c.rates_config().fallback_rates.len(), 2);
        let shown = c.to_masked_toml();
        assert!(
            !shown.contains("hunter2") && !shown.contains("cmc-secret"),
            "{shown}"
        );
        assert!(shown.contains("127.0.0.1:38332:alice:********"), "{shown}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let bad = |text: &str, e: &[(&str, &str)]| {
            AppConfig::from_toml_and_env(text, "f.toml", env(e)).unwrap_err()
        };
        assert_eq!(bad("[node]\nnetwork = \"moon\"", &[]).key, "node.network");
        assert_eq!(
            bad("", &[("LIGHTKEEPER_INVOICES_MIN_EXPIRY_SECS", "abc")]).key,
            "LIGHTKEEPER_INVOICES_MIN_EXPIRY_SECS"
        );
        assert_eq!(
            bad("", &[("LIGHTKEEPER_NODE_COLOUR", "red")]).key,
            "LIGHTKEEPER_NODE_COLOUR"
        );
        assert_eq!(
            bad(
                "[invoices]\nmin_expiry_secs = 100\nmax_expiry_secs = 50",
                &[]
            )
            .key,
            "invoices.max_expiry_secs"
        );
        assert_eq!(
            bad("[rates]\nfallback = { EUR = \"-1\" }", &[]).key,
            "rates.fallback.EUR"
        );
        let e = bad("[node]\nnetwrk = \"x\"", &[]);
        assert!(e.reason.contains("netwrk"), "{e}");
        let e = bad("[api]\nmax_body_bytes = \"big\"", &[]);
        assert!(e.reason.contains("max_body_bytes"), "{e}");
    }
}
