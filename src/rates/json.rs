//! A small, strict JSON parser that keeps numbers as their source text.
//!
//! `serde_json` (without its `arbitrary_precision` feature, which would change number handling
//! for the whole dependency graph) turns every non-integer number into an `f64`, so a price like
//! `91234.5678` would pass through binary floating point. This parser keeps the literal text of
//! each number so it can be converted straight to [`rust_decimal::Decimal`]. It is only used for
//! the small provider responses: it limits nesting depth and never panics on any input.

use std::str::FromStr;

use rust_decimal::Decimal;

/// Deepest nesting accepted; provider responses are a few levels deep.
const MAX_DEPTH: usize = 32;

/// A parsed JSON value; numbers keep their literal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    /// The number exactly as written (already checked against the JSON number grammar).
    Number(String),
    String(String),
    Array(Vec<Json>),
    /// Members in document order; lookups take the first member with a name.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses a whole document (surrounding whitespace allowed, nothing else).
    pub(crate) fn parse(input: &[u8]) -> Result<Json, String> {
        let mut p = Parser { s: input, i: 0 };
        p.ws();
        let v = p.value(0)?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!(
                "unexpected data after the JSON value at byte {}",
                p.i
            ));
        }
        Ok(v)
    }

    /// The member `key` of an object (`None` for other kinds or a missing key).
    pub(crate) fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The member whose name equals `key` ignoring ASCII case.
    pub(crate) fn get_ignore_case(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string content, if this is a string.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the kind, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// The number as an exact decimal, without passing through binary floating point.
    pub(crate) fn as_decimal(&self) -> Result<Decimal, String> {
        match self {
            Json::Number(text) => decimal_from_json_number(text),
            other => Err(format!("expected a number, found {}", other.kind())),
        }
    }
}

/// Converts a JSON number literal to a [`Decimal`] exactly (fails if it does not fit).
pub(crate) fn decimal_from_json_number(text: &str) -> Result<Decimal, String> {
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text)
    };
    // `from_str_exact` refuses literals with more fractional digits than a Decimal holds; such a
    // price is still meaningful, so round it (half-even) to Decimal's precision.
    parsed
        .or_else(|_| Decimal::from_str(text))
        .map_err(|e| format!("number {text} does not fit a decimal: {e}"))
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        match self.peek() {
            Some(_) => Err(format!("{what} at byte {}", self.i)),
            None => Err(format!("{what}: unexpected end of input")),
        }
    }

    fn literal(&mut self, word: &[u8], v: Json) -> Result<Json, String> {
        if self.s.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(v)
        } else {
            self.err("invalid literal")
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return self.err("JSON nested too deeply");
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.literal(b"true", Json::Bool(true)),
            Some(b'f') => self.literal(b"false", Json::Bool(false)),
            Some(b'n') => self.literal(b"null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.err("expected a JSON value"),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.i += 1; // '{'
        let mut members = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return self.err("expected an object key");
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return self.err("expected ':'");
            }
            self.i += 1;
            self.ws();
            let v = self.value(depth + 1)?;
            members.push((key, v));
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Json::Object(members));
                }
                _ => return self.err("expected ',' or '}'"),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.i += 1; // '['
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Json::Array(items));
                }
                _ => return self.err("expected ',' or ']'"),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return self.err("invalid number: no digits after '.'");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return self.err("invalid number: no digits in the exponent");
            }
        }
        let text = self
            .s
            .get(start..self.i)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default();
        Ok(Json::Number(text.to_owned()))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return self.err("invalid \\u escape"),
            };
            v = v * 16 + u32::from(d);
            self.i += 1;
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.peek() {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return String::from_utf8(out).map_err(|_| "invalid UTF-8 in a string".into());
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return self.err("unpaired surrogate in a string");
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return self.err("invalid surrogate pair in a string");
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            let Some(c) = char::from_u32(code) else {
                                return self.err("invalid \\u escape");
                            };
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return self.err("invalid escape in a string"),
                    };
                    self.i += 1;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(c) if c < 0x20 => return self.err("control character in a string"),
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_number_text_and_converts_exactly() {
        let v = Json::parse(br#" {"bitcoin": {"eur": 91234.123456789012345678, "n": -0.5e-3}} "#)
            .unwrap();
        let eur = v.get("bitcoin").and_then(|b| b.get("eur")).unwrap();
        assert_eq!(eur, &Json::Number("91234.123456789012345678".into()));
        assert_eq!(
            eur.as_decimal().unwrap().to_string(),
            "91234.123456789012345678"
        );
        let n = v.get("bitcoin").and_then(|b| b.get("n")).unwrap();
        assert_eq!(n.as_decimal().unwrap(), Decimal::new(-5, 4));
        assert_eq!(
            Json::Number("9.1234e4".into()).as_decimal().unwrap(),
            Decimal::new(91234, 0)
        );
    }

    #[test]
    fn parses_all_kinds() {
        let v = Json::parse(
            br#"[null, true, false, "a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00", {}, [], 0, -1]"#,
        )
        .unwrap();
        let Json::Array(items) = v else {
            panic!("array")
        };
        assert_eq!(items.len(), 8);
        assert_eq!(
            items[3].as_str().unwrap(),
            "a\"\\/\u{8}\u{c}\n\r\t\u{e9}\u{1F600}"
        );
    }

    #[test]
    fn rejects_malformed_without_panicking() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\"",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"[1,]",
            b"01",
            b"1.",
            b"1e",
            b"-",
            b".5",
            b"NaN",
            b"tru",
            b"\"abc",
            b"\"\\x\"",
            b"\"\\ud800\"",
            b"\"\\u12\"",
            b"\"\xff\"",
            b"\"a\nb\"",
            b"{} {}",
            b"<html>",
        ] {
            assert!(
                Json::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(Json::parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn huge_numbers_error_instead_of_panicking() {
        assert!(decimal_from_json_number("1e400").is_err());
        assert!(decimal_from_json_number("123456789012345678901234567890123").is_err());
        for text in [
            "1e99999999999999999999",
            "1e-99999999999999999999",
            "1e-400",
            "-0",
            "0.0",
            "1E+2",
            "0.00000000000000000000000000000000000001",
            "79228162514264337593543950335",
            "79228162514264337593543950336",
        ] {
            let _ = decimal_from_json_number(text);
        }
        assert_eq!(
            decimal_from_json_number("1E+2").unwrap(),
            Decimal::new(100, 0)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A fixed-seed xorshift over a JSON-ish alphabet: bounded, deterministic.
        let alphabet = b"{}[]:,\"0123456789-+.eEtrufalsn \\u\xff";
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let len = (x % 24) as usize;
            let mut doc = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                doc.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            if let Ok(v) = Json::parse(&doc) {
                if let Json::Number(_) = v {
                    let _ = v.as_decimal();
                }
            }
        }
    }
}
