//! Canonical JSON: the one byte sequence for a value.
//!
//! The bundle's identity is the sha256 of its manifest's bytes, and signatures cover
//! that digest, so "the same manifest" must mean "the same bytes" in every
//! implementation. We write RFC 8785 (JCS) restricted to what the format uses:
//! objects with keys sorted by UTF-16 code units, no insignificant white space,
//! strings escaped as ECMAScript's `JSON.stringify` does, and integers only (a float
//! is a format error, never silently rounded).

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

/// Why a value cannot be written canonically.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// The format has no floats; a float means a bug or hostile input.
    #[error("canonical JSON allows integers only, found {0}")]
    Float(String),
    /// Serialization itself failed, or the bytes are not JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The bytes are JSON but not its canonical form.
    #[error("byte {at} differs from the canonical form (white space, key order, escapes, number form or a duplicate key)")]
    NotCanonical {
        /// Offset of the first byte that differs.
        at: usize,
    },
}

impl crate::error::Classify for CanonicalError {
    /// Whoever asked for canonical bytes decides (a bundle's head: verification).
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}

/// Canonical bytes of any serializable value.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(value)?;
    let mut out = Vec::new();
    write_value(&mut out, &value)?;
    Ok(out)
}

/// Checks that `bytes` are exactly the canonical form of the JSON they hold. A
/// reader that requires this sees the same value as every other reader: no
/// duplicate keys (parsers disagree on which one wins), no second spelling of a
/// string or a number, nothing outside the value.
pub fn check(bytes: &[u8]) -> Result<(), CanonicalError> {
    let value: Value = serde_json::from_slice(bytes)?;
    let mut canonical = Vec::with_capacity(bytes.len());
    write_value(&mut canonical, &value)?;
    if canonical != bytes {
        let at = canonical
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(canonical.len().min(bytes.len()));
        return Err(CanonicalError::NotCanonical { at });
    }
    Ok(())
}

fn write_value(out: &mut Vec<u8>, v: &Value) -> Result<(), CanonicalError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if n.is_f64() {
                return Err(CanonicalError::Float(n.to_string()));
            }
            write!(out, "{n}").expect("writing to a Vec cannot fail");
        }
        Value::String(s) => serde_json::to_writer(&mut *out, s)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                write_value(out, val)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v = json!({"b": 1, "a": [true, null, "x\ny\u{1}"], "A": {"z": 0, "y": -5}});
        assert_eq!(
            String::from_utf8(to_vec(&v).unwrap()).unwrap(),
            r#"{"A":{"y":-5,"z":0},"a":[true,null,"x\ny\u0001"],"b":1}"#
        );
    }

    #[test]
    fn refuses_floats() {
        assert!(matches!(
            to_vec(&json!({"x": 1.5})),
            Err(CanonicalError::Float(_))
        ));
    }

    #[test]
    fn only_canonical_bytes_pass_the_check() {
        check(br#"{"a":[1,"x\n"],"b":{}}"#).unwrap();
        for bad in [
            &br#"{"b":1,"a":2}"#[..],
            br#"{"a":1,"a":2}"#,
            br#"{"a": 1}"#,
            br#"{"a":1} "#,
            br#"{"a":"\u0041"}"#,
            br#"{"a":"\/"}"#,
            br#"{"a":1.0}"#,
            br#"{"a":1e2}"#,
            br#"{"a":-0}"#,
            br#"{"a":"\u001F"}"#,
        ] {
            assert!(check(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(
            check(br#"{"a":1,"a":2}"#),
            Err(CanonicalError::NotCanonical { at: 5 })
        ));
    }

    #[test]
    fn reparse_and_rewrite_is_byte_identical() {
        let v = json!({"name": "é ü \u{2028}", "n": 18446744073709551615u64, "k": {"\u{e9}": 1, "z": 2}});
        let bytes = to_vec(&v).unwrap();
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(to_vec(&back).unwrap(), bytes);
    }
}
