//! Bodies of the dashboard's forms (`application/x-www-form-urlencoded`), read once by the
//! CSRF check and handed to the handler.

use std::collections::HashMap;

/// The fields of a submitted form; a repeated field keeps its first value.
#[derive(Debug, Clone, Default)]
pub struct FormData(HashMap<String, String>);

impl FormData {
    /// Decodes a urlencoded body (`+` is a space).
    pub fn parse(body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let mut fields = HashMap::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            fields.entry(decode(k)).or_insert_with(|| decode(v));
        }
        FormData(fields)
    }

    /// A field, trimmed; `None` when missing or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_urlencoded_bodies() {
        let f = FormData::parse(b"reason=accepted+risk%21&csrf=abc&empty=&csrf=second&x");
        assert_eq!(f.get("reason"), Some("accepted risk!"));
        assert_eq!(f.get("csrf"), Some("abc"));
        assert_eq!(f.get("empty"), None);
        assert_eq!(f.get("x"), None);
        assert_eq!(f.get("missing"), None);
        assert_eq!(FormData::parse(b"a=%E2%9C%93").get("a"), Some("✓"));
    }
}
