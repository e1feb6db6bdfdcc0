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

/// The canonical form laid out for people to read: the same keys in the same
/// order, the same string escapes and integers, with each member and item on a
/// line of its own, indented by two spaces per level, and `": "` after a key;
/// empty objects and arrays stay `{}` and `[]`. As deterministic as [`to_vec`] (one
/// value, one byte sequence), so a file written this way (the lock) is still
/// byte-identical from run to run, and it diffs one entry a line in review.
pub fn to_vec_pretty<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(value)?;
    let mut out = Vec::new();
    write_pretty(&mut out, &value, 0)?;
    Ok(out)
}

fn newline(out: &mut Vec<u8>, depth: usize) {
    out.push(b'\n');
    out.extend(std::iter::repeat_n(b' ', 2 * depth));
}

fn write_pretty(out: &mut Vec<u8>, v: &Value, depth: usize) -> Result<(), CanonicalError> {
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                newline(out, depth + 1);
                write_pretty(out, item, depth + 1)?;
            }
            newline(out, depth);
            out.push(b']');
        }
        Value::Object(map) if !map.is_empty() => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                newline(out, depth + 1);
                serde_json::to_writer(&mut *out, k)?;
                out.extend_from_slice(b": ");
                write_pretty(out, val, depth + 1)?;
            }
            newline(out, depth);
            out.push(b'}');
        }
        other => write_value(out, other)?,
    }
    Ok(())
}

/// Checks that `bytes` are exactly the canonical form of the JSON they hold. A
/// reader that requires this sees the same value as every other reader: no
/// duplicate keys (parsers disagree on which one wins), no second spelling of a
/// string or a number, nothing outside the value.
pub fn check(bytes: &[u8]) -> Result<(), CanonicalError> {
    let value: Value = serde_json::from_slice(bytes)?;
    let mut canonical = Compare {
        expect: bytes,
        at: 0,
        differs: None,
    };
    write_value(&mut canonical, &value)?;
    drop(value);
    let shorter = (canonical.at < bytes.len()).then_some(canonical.at);
    match canonical.differs.or(shorter) {
        Some(at) => Err(CanonicalError::NotCanonical { at }),
        None => Ok(()),
    }
}

/// Writes `v` canonically to `out`, which never fails (a `Vec`, or [`Compare`]).
fn write_value<W: Write>(out: &mut W, v: &Value) -> Result<(), CanonicalError> {
    let put = |out: &mut W, b: &[u8]| out.write_all(b).map_err(serde_json::Error::io);
    match v {
        Value::Null => put(out, b"null")?,
        Value::Bool(b) => put(out, if *b { b"true" } else { b"false" })?,
        Value::Number(n) => {
            if n.is_f64() {
                return Err(CanonicalError::Float(n.to_string()));
            }
            write!(out, "{n}").map_err(serde_json::Error::io)?;
        }
        Value::String(s) => serde_json::to_writer(&mut *out, s)?,
        Value::Array(items) => {
            put(out, b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    put(out, b",")?;
                }
                write_value(out, item)?;
            }
            put(out, b"]")?;
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            put(out, b"{")?;
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    put(out, b",")?;
                }
                serde_json::to_writer(&mut *out, k)?;
                put(out, b":")?;
                write_value(out, val)?;
            }
            put(out, b"}")?;
        }
    }
    Ok(())
}

/// A writer that compares what it is given with `expect` instead of keeping it,
/// remembering the first byte that differs: [`check`] needs no second copy of a
/// manifest (9 MiB for 20,000 objects).
struct Compare<'a> {
    expect: &'a [u8],
    at: usize,
    differs: Option<usize>,
}

impl Write for Compare<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.at + buf.len();
        if self.differs.is_none() && self.expect.get(self.at..end) != Some(buf) {
            let have = self.expect.get(self.at..).unwrap_or_default();
            let same = buf.iter().zip(have).take_while(|(a, b)| a == b).count();
            self.differs = Some(self.at + same);
        }
        self.at = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
    fn pretty_form_is_the_canonical_one_laid_out() {
        let v = serde_json::json!({"b": [1, {"y": "\u{1}", "x": []}], "a": {}, "é": true});
        let pretty = to_vec_pretty(&v).unwrap();
        assert_eq!(
            String::from_utf8(pretty.clone()).unwrap(),
            "{\n  \"a\": {},\n  \"b\": [\n    1,\n    {\n      \"x\": [],\n      \"y\": \"\\u0001\"\n    }\n  ],\n  \"é\": true\n}"
        );
        // The same value as the compact form, and the same bytes every time.
        let back: Value = serde_json::from_slice(&pretty).unwrap();
        assert_eq!(to_vec(&back).unwrap(), to_vec(&v).unwrap());
        assert_eq!(to_vec_pretty(&back).unwrap(), pretty);
        assert!(to_vec_pretty(&serde_json::json!({"f": 1.5})).is_err());
    }

    #[test]
    fn refuses_floats() {
        assert!(matches!(
            to_vec(&json!({"x": 1.5})),
            Err(CanonicalError::Float(_))
        ));
    }

    #[test]
    fn the_check_names_the_first_byte_that_differs() {
        let at = |b: &[u8]| match check(b) {
            Err(CanonicalError::NotCanonical { at }) => at,
            other => panic!("{other:?}"),
        };
        assert_eq!(at(br#"{"b":1,"a":2}"#), 2);
        assert_eq!(at(br#"{"a": 1}"#), 5);
        // The canonical form is a prefix of the bytes: the first byte past it.
        assert_eq!(at(b"{\"a\":1}\n"), 7);
        assert_eq!(at(br#"{"a":[1,2] }"#), 10);
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
