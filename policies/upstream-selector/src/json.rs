//! JSON values the way Go's `encoding/json` sees them when it decodes into a struct.
//!
//! serde_json's own `Value` keeps one entry per key and loses the input order, but Go decodes an
//! object key by key in input order: with duplicate or case-variant keys (`"vendors"` then
//! `"Vendors"`) the last one wins. [`Json::Object`] therefore keeps every entry, in order.
//!
//! Go only scans the value of a key its struct has no field for, checking its syntax. Decoding
//! such a value anyway would refuse valid JSON that upstream merely skips — a number beyond `f64`
//! (`1e400`), a lone surrogate escape (`"\ud800"`), nesting deeper than serde_json's recursion
//! limit of 128 — and with it the whole configuration. A [`Shape`] says which values the config
//! decoder reads; the others are checked for syntax only ([`Json::Skipped`]).

use std::fmt;

use serde::de::{
    Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;

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
    /// The value of a key the [`Shape`] does not read: only its syntax was checked.
    Skipped,
    /// A value kept as its JSON text ([`Shape::Raw`]), to be decoded later with [`Json::parse`].
    Raw(String),
}

/// Which values of a document the config decoder reads, so that the others are only checked for
/// syntax, as Go's decoder does with the values of keys its struct has no field for.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Decoded in full: a field the decoder reads (its type is checked there).
    Any,
    /// An object whose keys `read` (matched as Go matches keys, see [`key_matches`]) are decoded
    /// in full and whose keys in `nested` are decoded with their shape; the other keys are kept
    /// (for the ignored-key notes) with a [`Json::Skipped`] value. Any other value is decoded in
    /// full, so that a type error can show it.
    Object {
        /// Keys whose values are decoded in full.
        read: &'static [&'static str],
        /// Keys whose values have a shape of their own (checked before `read`).
        nested: &'static [(&'static str, Shape)],
    },
    /// A list of values of the given shape; an object is read with that shape too (`selectors`
    /// is an object or a list of them; for `resourceList` an object is a type error anyway).
    List(&'static Shape),
    /// Kept as JSON text (Go's `json.RawMessage`), for a value whose shape depends on a sibling
    /// key that may come after it (`selectors` depends on `deviceType`).
    Raw,
}

impl Json {
    /// Parses strict JSON (no comments, no trailing commas, one top-level value), as Go does,
    /// decoding only what `shape` reads.
    pub fn parse(text: &str, shape: Shape) -> Result<Json, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = Shaped(shape).deserialize(&mut deserializer)?;
        // Anything but whitespace after the value is an error, as in `serde_json::from_str`.
        deserializer.end()?;
        Ok(value)
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
            Json::Skipped => "an ignored value",
            Json::Raw(_) => "a JSON value",
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
            Json::Skipped => "...".to_string(),
            Json::Raw(raw) => raw.clone(),
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

/// Decodes a value with a [`Shape`].
struct Shaped(Shape);

impl<'de> DeserializeSeed<'de> for Shaped {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        match self.0 {
            Shape::Raw => {
                // serde_json finds the end of a raw value the way it skips one: syntax only.
                let raw = Box::<RawValue>::deserialize(deserializer)?;
                Ok(Json::Raw(raw.get().to_string()))
            }
            shape => deserializer.deserialize_any(JsonVisitor(shape)),
        }
    }
}

struct JsonVisitor(Shape);

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
        let item = match self.0 {
            Shape::List(item) => *item,
            _ => Shape::Any,
        };
        let mut items = Vec::new();
        while let Some(value) = seq.next_element_seed(Shaped(item))? {
            items.push(value);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let fields = match self.0 {
            Shape::Object { read, nested } => Some((read, nested)),
            Shape::List(&Shape::Object { read, nested }) => Some((read, nested)),
            _ => None,
        };
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let value = match fields {
                None => map.next_value_seed(Shaped(Shape::Any))?,
                Some((read, nested)) => {
                    if let Some((_, shape)) = nested.iter().find(|(f, _)| key_matches(&key, f)) {
                        map.next_value_seed(Shaped(*shape))?
                    } else if read.iter().any(|f| key_matches(&key, f)) {
                        map.next_value_seed(Shaped(Shape::Any))?
                    } else {
                        map.next_value::<IgnoredAny>()?;
                        Json::Skipped
                    }
                }
            };
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}

/// Decodes an object key as Go does: a lone surrogate escape (`"\ud800"`) reads as U+FFFD instead
/// of failing, so such a key is merely unknown.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        // As bytes, serde_json does not validate surrogates.
        deserializer.deserialize_bytes(self)
    }
}

impl Visitor<'_> for Key {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<String, E> {
        Ok(go_string(v))
    }
}

/// The text of serde_json's unvalidated string bytes: valid UTF-8 except that each lone surrogate
/// escape is in its 3-byte generalized UTF-8 form (`ED A0..BF 80..BF`), which Go reads as one
/// U+FFFD.
fn go_string(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                out.push_str(valid);
                return out;
            }
            Err(error) => {
                let (valid, invalid) = bytes.split_at(error.valid_up_to());
                out.push_str(&String::from_utf8_lossy(valid));
                out.push('\u{FFFD}');
                // A lone surrogate as one replacement, like Go, not one per byte.
                let skip = if invalid.first() == Some(&0xED) {
                    3
                } else {
                    error.error_len().unwrap_or(invalid.len())
                };
                bytes = invalid.get(skip..).unwrap_or_default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_keep_duplicates_in_order() {
        let parsed = Json::parse(r#"{"a":1,"A":2,"a":3}"#, Shape::Any).unwrap();
        let Json::Object(entries) = parsed else {
            panic!("not an object")
        };
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "A", "a"]);
    }

    #[test]
    fn strictness_matches_go() {
        assert!(
            Json::parse(r#"{"a":[1,2,],}"#, Shape::Any).is_err(),
            "trailing commas"
        );
        assert!(
            Json::parse(r#"{"a":1} {"b":2}"#, Shape::Any).is_err(),
            "two values"
        );
        assert!(
            Json::parse("\u{feff}{}", Shape::Any).is_err(),
            "byte order mark"
        );
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
