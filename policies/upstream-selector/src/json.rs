//! JSON values the way Go's `encoding/json` sees them when it decodes into a struct.
//!
//! serde_json's own `Value` keeps one entry per key and loses the input order, but Go decodes an
//! object key by key in input order: with duplicate or case-variant keys (`"vendors"` then
//! `"Vendors"`) the last one wins. [`Json::Object`] therefore keeps every entry, in order.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A parsed JSON value with objects kept as ordered entry lists (duplicates included).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// Any number (only its presence matters to the config decoder).
    Number(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object: every `key: value` entry in input order, duplicates kept.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses strict JSON (no comments, no trailing commas, one top-level value), as Go does.
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The JSON type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "a list",
            Json::Object(_) => "an object",
        }
    }

    /// A short rendering of the value for error messages (long values are cut).
    pub fn excerpt(&self) -> String {
        let mut text = match self {
            Json::Null => "null".to_string(),
            Json::Bool(b) => b.to_string(),
            Json::Number(n) => n.to_string(),
            Json::String(s) => format!("{s:?}"),
            Json::Array(items) => format!("[...{} items]", items.len()),
            Json::Object(entries) => format!("{{...{} keys}}", entries.len()),
        };
        if text.len() > 60 {
            let mut cut = 57;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("...");
        }
        text
    }
}

/// Go's key matching for struct fields: an exact match or a case-insensitive one (Go folds with
/// `bytes.EqualFold` plus the Kelvin sign and long s special cases, which fold to `k` and `s`).
pub fn key_matches(key: &str, field: &str) -> bool {
    fn fold(c: char) -> char {
        match c {
            '\u{212A}' => 'k',
            '\u{017F}' => 's',
            c => c.to_ascii_lowercase(),
        }
    }
    key.chars().map(fold).eq(field.chars().map(fold))
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Number(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Json>()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_keep_duplicates_in_order() {
        let parsed = Json::parse(r#"{"a":1,"A":2,"a":3}"#).unwrap();
        let Json::Object(entries) = parsed else {
            panic!("not an object")
        };
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "A", "a"]);
    }

    #[test]
    fn strictness_matches_go() {
        assert!(Json::parse(r#"{"a":[1,2,],}"#).is_err(), "trailing commas");
        assert!(Json::parse(r#"{"a":1} {"b":2}"#).is_err(), "two values");
        assert!(Json::parse("\u{feff}{}").is_err(), "byte order mark");
    }

    #[test]
    fn keys_fold_like_go() {
        assert!(key_matches("IsRdma", "isRdma"));
        assert!(key_matches("PFNAMES", "pfNames"));
        assert!(key_matches("\u{212A}ey", "key"));
        assert!(key_matches("\u{017F}elector", "selector"));
        assert!(!key_matches("pfName", "pfNames"));
    }
}
