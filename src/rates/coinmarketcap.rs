//! CoinMarketCap's `quotes/latest` endpoint.

use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;

use super::json::Json;
use super::provider::{
    check_price, get_json, http_client, normalize_base_url, sanitize, ProviderError, RateProvider,
};

/// CoinMarketCap's professional API.
pub const COINMARKETCAP_DEFAULT_BASE_URL: &str = "https://pro-api.coinmarketcap.com";

/// Prices from CoinMarketCap:
/// `GET {base}/v1/cryptocurrency/quotes/latest?symbol=BTC&convert=EUR` with the API key in the
/// `X-CMC_PRO_API_KEY` header, answered as
/// `{"status":{"error_code":0,...},"data":{"BTC":{"quote":{"EUR":{"price":91234.5678}}}}}`.
/// A non-zero `status.error_code` is reported with its `error_message`.
#[derive(Debug, Clone)]
pub struct CoinMarketCapProvider {
    client: reqwest::Client,
    base_url: String,
    api_key: String,
}

impl CoinMarketCapProvider {
    /// A provider with its own HTTP client whose requests time out after `timeout`.
    ///
    /// # Errors
    /// [`ProviderError::Config`] if the API key is empty, `base_url` is not an http(s) URL or
    /// the HTTP client cannot be built.
    pub fn new(base_url: &str, api_key: &str, timeout: Duration) -> Result<Self, ProviderError> {
        Self::with_client(http_client(timeout)?, base_url, api_key)
    }

    /// A provider using `client` (whose timeout applies).
    ///
    /// # Errors
    /// [`ProviderError::Config`] if the API key is empty or `base_url` is not an http(s) URL.
    pub fn with_client(
        client: reqwest::Client,
        base_url: &str,
        api_key: &str,
    ) -> Result<Self, ProviderError> {
        let api_key = api_key.trim();
        if api_key.is_empty() {
            return Err(ProviderError::Config(
                "CoinMarketCap needs an API key (X-CMC_PRO_API_KEY)".into(),
            ));
        }
        if reqwest::header::HeaderValue::from_str(api_key).is_err() {
            return Err(ProviderError::Config(
                "the CoinMarketCap API key contains characters not allowed in a header".into(),
            ));
        }
        Ok(Self {
            client,
            base_url: normalize_base_url(base_url)?,
            api_key: api_key.to_owned(),
        })
    }
}

/// Extracts `data.BTC.quote.<CURRENCY>.price` from a `quotes/latest` answer (v1 object shape;
/// the v2 array shape is accepted too, taking the first entry).
fn parse_price(body: &Json, currency: &str) -> Result<Decimal, ProviderError> {
    let Json::Object(_) = body else {
        return Err(ProviderError::Malformed(format!(
            "expected a JSON object, found {}",
            body.kind()
        )));
    };
    if let Some(status) = body.get("status") {
        let code = match status.get("error_code") {
            Some(Json::Number(n)) => Some(n.as_str()),
            Some(Json::String(s)) => Some(s.as_str()),
            _ => None,
        };
        if let Some(code) = code.filter(|c| *c != "0") {
            let msg = status
                .get("error_message")
                .and_then(Json::as_str)
                .map(sanitize)
                .unwrap_or_else(|| "no error message".into());
            return Err(ProviderError::Api(format!("error {code}: {msg}")));
        }
    }
    let data = body
        .get("data")
        .ok_or_else(|| ProviderError::Malformed("no \"data\" entry".into()))?;
    let btc = match data.get("BTC") {
        Some(Json::Array(items)) => items
            .first()
            .ok_or_else(|| ProviderError::Malformed("\"data.BTC\" is an empty array".into()))?,
        Some(v @ Json::Object(_)) => v,
        Some(other) => {
            return Err(ProviderError::Malformed(format!(
                "\"data.BTC\" is {}, expected an object",
                other.kind()
            )))
        }
        None => return Err(ProviderError::Malformed("no \"data.BTC\" entry".into())),
    };
    let quote = btc
        .get("quote")
        .ok_or_else(|| ProviderError::Malformed("no \"data.BTC.quote\" entry".into()))?;
    let Some(entry) = quote.get_ignore_case(currency) else {
        return Err(ProviderError::MissingCurrency(currency.to_owned()));
    };
    let price = entry.get("price").ok_or_else(|| {
        ProviderError::Malformed(format!("no \"data.BTC.quote.{currency}.price\" entry"))
    })?;
    let price = price
        .as_decimal()
        .map_err(|e| ProviderError::InvalidPrice(format!("quote.{currency}.price: {e}")))?;
    check_price(price)
}

#[async_trait]
impl RateProvider for CoinMarketCapProvider {
    fn name(&self) -> &str {
        "coinmarketcap"
    }

    /// # Errors
    /// Timeouts, transport failures, non-success HTTP statuses (429 as
    /// [`ProviderError::RateLimited`], 401/403 for a bad key), a non-zero `error_code`
    /// ([`ProviderError::Api`]), malformed bodies, a currency CoinMarketCap does not convert to
    /// ([`ProviderError::MissingCurrency`]) and non-positive prices.
    async fn fetch(&self, currency: &str) -> Result<Decimal, ProviderError> {
        let convert = currency.to_ascii_uppercase();
        let req = self
            .client
            .get(format!("{}/v1/cryptocurrency/quotes/latest", self.base_url))
            .query(&[("symbol", "BTC"), ("convert", convert.as_str())])
            .header(reqwest::header::ACCEPT, "application/json")
            .header("X-CMC_PRO_API_KEY", &self.api_key);
        match get_json(req).await {
            Ok(body) => parse_price(&body, &convert),
            // An unknown `convert` currency is answered 400 `Invalid value for "convert"`.
            Err(ProviderError::Http {
                status: 400,
                message,
            }) if message.contains("\"convert\"") => Err(ProviderError::MissingCurrency(convert)),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, c: &str) -> Result<Decimal, ProviderError> {
        parse_price(&Json::parse(s.as_bytes()).unwrap(), c)
    }

    const OK: &str = r#"{"status":{"timestamp":"2025-01-01T00:00:00.000Z","error_code":0,
        "error_message":null,"elapsed":10,"credit_count":1,"notice":null},
        "data":{"BTC":{"id":1,"name":"Bitcoin","symbol":"BTC","slug":"bitcoin",
        "quote":{"EUR":{"price":91234.56789012,"volume_24h":1.5e10,
        "last_updated":"2025-01-01T00:00:00.000Z"}}}}}"#;

    #[test]
    fn parses_the_documented_shapes() {
        assert_eq!(
            parse(OK, "EUR").unwrap(),
            Decimal::new(9_123_456_789_012, 8)
        );
        let v2 = r#"{"status":{"error_code":0,"error_message":null},
            "data":{"BTC":[{"id":1,"symbol":"BTC","quote":{"USD":{"price":100000.5}}}]}}"#;
        assert_eq!(parse(v2, "USD").unwrap(), Decimal::new(1_000_005, 1));
    }

    #[test]
    fn reports_errors() {
        assert_eq!(
            parse(OK, "CHF"),
            Err(ProviderError::MissingCurrency("CHF".into()))
        );
        assert_eq!(
            parse(
                r#"{"status":{"error_code":1002,"error_message":"API key missing."}}"#,
                "EUR"
            ),
            Err(ProviderError::Api("error 1002: API key missing.".into()))
        );
        for bad in [
            r#"{"status":{"error_code":0}}"#,
            r#"{"data":{"BTC":[]}}"#,
            r#"{"data":{"BTC":1}}"#,
            r#"{"data":{"BTC":{"quote":{"EUR":{}}}}}"#,
            r#"[]"#,
        ] {
            assert!(
                matches!(parse(bad, "EUR"), Err(ProviderError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(
                r#"{"data":{"BTC":{"quote":{"EUR":{"price":null}}}}}"#,
                "EUR"
            ),
            Err(ProviderError::InvalidPrice(_))
        ));
        assert!(matches!(
            parse(r#"{"data":{"BTC":{"quote":{"EUR":{"price":-1}}}}}"#, "EUR"),
            Err(ProviderError::InvalidPrice(_))
        ));
    }
}
