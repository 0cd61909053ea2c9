//! CoinGecko's `simple/price` endpoint.

use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;

use super::json::Json;
use super::provider::{
    check_price, get_json, http_client, normalize_base_url, ProviderError, RateProvider,
};

/// CoinGecko's public API.
pub const COINGECKO_DEFAULT_BASE_URL: &str = "https://api.coingecko.com";

/// Prices from CoinGecko: `GET {base}/api/v3/simple/price?ids=bitcoin&vs_currencies=eur`,
/// answered as `{"bitcoin":{"eur":91234.56}}`. A demo API key, if set, is sent in the
/// `x-cg-demo-api-key` header.
#[derive(Debug, Clone)]
pub struct CoinGeckoProvider {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
}

impl CoinGeckoProvider {
    /// A provider with its own HTTP client whose requests time out after `timeout`.
    ///
    /// # Errors
    /// [`ProviderError::Config`] if `base_url` is not an http(s) URL or the HTTP client cannot
    /// be built.
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        Self::with_client(http_client(timeout)?, base_url, api_key)
    }

    /// A provider using `client` (whose timeout applies).
    ///
    /// # Errors
    /// [`ProviderError::Config`] if `base_url` is not an http(s) URL.
    pub fn with_client(
        client: reqwest::Client,
        base_url: &str,
        api_key: Option<String>,
    ) -> Result<Self, ProviderError> {
        Ok(Self {
            client,
            base_url: normalize_base_url(base_url)?,
            api_key: api_key.filter(|k| !k.trim().is_empty()),
        })
    }
}

/// Extracts `bitcoin.<currency>` from a `simple/price` answer.
fn parse_price(body: &Json, currency: &str) -> Result<Decimal, ProviderError> {
    let Json::Object(_) = body else {
        return Err(ProviderError::Malformed(format!(
            "expected a JSON object, found {}",
            body.kind()
        )));
    };
    let Some(btc) = body.get("bitcoin") else {
        // CoinGecko answers `{}` for unknown ids and an error object for bad requests.
        if let Some(msg) = body
            .get("status")
            .and_then(|s| s.get("error_message"))
            .and_then(Json::as_str)
        {
            return Err(ProviderError::Api(super::provider::sanitize(msg)));
        }
        return Err(ProviderError::Malformed("no \"bitcoin\" entry".into()));
    };
    let Some(price) = btc.get(&currency.to_ascii_lowercase()) else {
        if let Json::Object(_) = btc {
            return Err(ProviderError::MissingCurrency(currency.to_owned()));
        }
        return Err(ProviderError::Malformed(format!(
            "\"bitcoin\" is {}, expected an object",
            btc.kind()
        )));
    };
    let price = price.as_decimal().map_err(|e| {
        ProviderError::InvalidPrice(format!("bitcoin.{}: {e}", currency.to_ascii_lowercase()))
    })?;
    check_price(price)
}

#[async_trait]
impl RateProvider for CoinGeckoProvider {
    fn name(&self) -> &str {
        "coingecko"
    }

    /// # Errors
    /// Timeouts, transport failures, non-success HTTP statuses (429 as
    /// [`ProviderError::RateLimited`]), malformed bodies, a currency CoinGecko does not quote
    /// ([`ProviderError::MissingCurrency`]) and non-positive prices.
    async fn fetch(&self, currency: &str) -> Result<Decimal, ProviderError> {
        let vs = currency.to_ascii_lowercase();
        let mut req = self
            .client
            .get(format!("{}/api/v3/simple/price", self.base_url))
            .query(&[("ids", "bitcoin"), ("vs_currencies", vs.as_str())])
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(key) = &self.api_key {
            req = req.header("x-cg-demo-api-key", key);
        }
        let body = get_json(req).await?;
        parse_price(&body, currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, c: &str) -> Result<Decimal, ProviderError> {
        parse_price(&Json::parse(s.as_bytes()).unwrap(), c)
    }

    #[test]
    fn parses_the_documented_shape() {
        assert_eq!(
            parse(r#"{"bitcoin":{"eur":91234.56}}"#, "EUR").unwrap(),
            Decimal::new(9_123_456, 2)
        );
        assert_eq!(
            parse(r#"{"bitcoin":{"usd":100000}}"#, "USD").unwrap(),
            Decimal::new(100_000, 0)
        );
    }

    #[test]
    fn reports_missing_and_bad_prices() {
        assert_eq!(
            parse(r#"{"bitcoin":{"usd":1}}"#, "EUR"),
            Err(ProviderError::MissingCurrency("EUR".into()))
        );
        assert!(matches!(
            parse(r#"{}"#, "EUR"),
            Err(ProviderError::Malformed(_))
        ));
        assert!(matches!(
            parse(r#"{"bitcoin":[1]}"#, "EUR"),
            Err(ProviderError::Malformed(_))
        ));
        assert!(matches!(
            parse(r#"[]"#, "EUR"),
            Err(ProviderError::Malformed(_))
        ));
        assert!(matches!(
            parse(r#"{"bitcoin":{"eur":"91234"}}"#, "EUR"),
            Err(ProviderError::InvalidPrice(_))
        ));
        assert!(matches!(
            parse(r#"{"bitcoin":{"eur":0}}"#, "EUR"),
            Err(ProviderError::InvalidPrice(_))
        ));
        assert!(matches!(
            parse(r#"{"bitcoin":{"eur":-5.5}}"#, "EUR"),
            Err(ProviderError::InvalidPrice(_))
        ));
        assert_eq!(
            parse(
                r#"{"status":{"error_code":10002,"error_message":"bad key"}}"#,
                "EUR"
            ),
            Err(ProviderError::Api("bad key".into()))
        );
    }
}
