//! Canonical JSON: the one byte sequence for a value.
//!
//! The bundle's identity is the sha256 of its manifest's bytes, and signatures cover
//! that digest, so "the same manifest" must mean "the same bytes" in every
//! implementation. We write RFC 8785 (JCS) restricted to what the format uses:
//! objects with keys sorted by UTF-16 code units, no insignificant white space,
//! strings escaped as ECMAScript's `JSON.stringify` does, and integers only (a float
//! is a format error, never silently rounded).

use std::io::Write;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::Value;

mod serializer;

/// Why a value cannot be written canonically.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// The format has no floats; a float means a bug or hostile input.
    #[error("canonical JSON allows integers only, found {0}")]
    Float(String),
    /// Serialization itself failed, or the bytes are not JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A key written where canonical order has no place for it: before or equal
    /// to the key before it in its object (a writer's bug, not input's).
    #[error("key {key:?} comes after {after:?} in its object, out of canonical order")]
    OutOfOrder {
        /// The key.
        key: String,
        /// The key before it.
        after: String,
    },
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
///
/// Written as the value is serialized (the private `serializer` module): the same
/// bytes as writing the `serde_json::Value` of the value, without the tree (a
/// 20,000-object manifest made a 50 MiB `Value`, the peak of `create`), and without
/// the serde_json bytes it once parsed again (a second copy, and most of the time).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    // Counted first: a `Vec` grown as bytes came doubled (16 MiB for a 9 MiB
    // manifest, 24 MiB as it grew). Canonical bytes are serde_json's compact ones
    // in another order, so the count is theirs.
    let mut counted = Counted(0);
    serde_json::to_writer(&mut counted, value)?;
    let mut out = Vec::with_capacity(counted.0);
    value
        .serialize(serializer::Writer {
            out: &mut out,
            depth: 0,
        })
        .map_err(|e| e.0)?;
    Ok(out)
}

/// A writer that only counts what it is given.
struct Counted(usize);

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Canonical key order: by UTF-16 code units, which is byte order when both keys
/// are ASCII (every key the format names).
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.as_bytes().cmp(b.as_bytes())
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// Objects with at most this many members are put in order in place; a larger one
/// is copied out first, as its members could be moved many times.
const IN_PLACE: usize = 32;

/// Puts the members of an object (at `body..` in `out`, each `"key":value` at its
/// place, separated by commas) in canonical key order, a repeated key keeping its
/// last value. Few members move in place, so the manifest's top level (ten keys
/// around 9 MiB of objects and blobs) needs no second copy of itself.
fn put_in_order(
    out: &mut Vec<u8>,
    body: usize,
    mut members: Vec<(std::borrow::Cow<'static, str>, std::ops::Range<usize>)>,
) {
    if members.len() > IN_PLACE {
        let written = out.split_off(body);
        // A stable sort keeps a repeated key's values in the order given.
        members.sort_by(|a, b| key_order(&a.0, &b.0));
        let mut first = true;
        for (i, (key, place)) in members.iter().enumerate() {
            if members.get(i + 1).is_some_and(|(next, _)| next == key) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(&written[place.clone()]);
            first = false;
        }
        return;
    }
    // Each member with the comma after it is a unit (a comma is added after the
    // last); an insertion sort moves each unit into place with a rotation.
    out.push(b',');
    let mut units: Vec<(std::borrow::Cow<'static, str>, usize)> = members
        .into_iter()
        .map(|(key, place)| (key, place.len() + 1))
        .collect();
    let mut start = 0;
    for i in 0..units.len() {
        let len = units[i].1;
        // After the equal keys already placed: a repeated key's values stay in the
        // order given.
        let j = units[..i].partition_point(|(k, _)| key_order(k, &units[i].0).is_le());
        let to: usize = units[..j].iter().map(|u| u.1).sum();
        out[body + to..body + start + len].rotate_right(len);
        let unit = units.remove(i);
        units.insert(j, unit);
        start += len;
    }
    // Of a repeated key, only the last unit stays.
    let mut at = body;
    for i in 0..units.len() {
        let len = units[i].1;
        if units
            .get(i + 1)
            .is_some_and(|(next, _)| *next == units[i].0)
        {
            out.drain(at..at + len);
        } else {
            at += len;
        }
    }
    out.pop();
}

/// The canonical form laid out for people to read: the same keys in the same
/// order, the same string escapes and integers, with each member and item on a
/// line of its own, indented by two spaces per level, and `": "` after a key;
/// empty objects and arrays stay `{}` and `[]`. As deterministic as [`to_vec`] (one
/// value, one byte sequence), so a file written this way (the lock) is still
/// byte-identical from run to run, and it diffs one entry a line in review.
///
/// Laid out from [`to_vec`]'s bytes, not from a `serde_json::Value` of the value
/// (a receipt of 20,000 files made a tree of some 15 MiB, the top of an import's
/// peak): canonical bytes hold no white space outside strings, so the layout is
/// added between their tokens.
pub fn to_vec_pretty<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let compact = to_vec(value)?;
    let mut out = Vec::with_capacity(compact.len() + compact.len() / 4);
    lay_out(&compact, &mut out).map_err(serde_json::Error::io)?;
    Ok(out)
}

/// [`to_vec_pretty`]'s bytes written to `out` as they are laid out, so only the
/// compact form is held (a receipt of 20,000 files: 2.6 MB, where the laid-out
/// copy beside it was 6.4 MiB more). An I/O error is a [`CanonicalError::Json`].
pub fn to_writer_pretty<W: Write, T: Serialize + ?Sized>(
    mut out: W,
    value: &T,
) -> Result<(), CanonicalError> {
    let compact = to_vec(value)?;
    lay_out(&compact, &mut out).map_err(serde_json::Error::io)?;
    Ok(())
}

/// `compact` (canonical bytes) laid out as [`to_vec_pretty`] says, into `out`: the
/// bytes between two places where layout goes are written as one run.
fn lay_out<W: Write>(compact: &[u8], out: &mut W) -> std::io::Result<()> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // The start of the bytes not written yet.
    let mut run = 0;
    let mut i = 0;
    while i < compact.len() {
        let b = compact[i];
        i += 1;
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                let close = if b == b'{' { b'}' } else { b']' };
                if compact.get(i) == Some(&close) {
                    i += 1;
                } else {
                    out.write_all(&compact[run..i])?;
                    run = i;
                    depth += 1;
                    newline(out, depth)?;
                }
            }
            b'}' | b']' => {
                out.write_all(&compact[run..i - 1])?;
                run = i - 1;
                depth -= 1;
                newline(out, depth)?;
            }
            b',' => {
                out.write_all(&compact[run..i])?;
                run = i;
                newline(out, depth)?;
            }
            b':' => {
                out.write_all(&compact[run..i])?;
                run = i;
                out.write_all(b" ")?;
            }
            _ => {}
        }
    }
    out.write_all(&compact[run..])
}

/// [`to_vec_pretty`]'s bytes of `value`, written to `out` as they are serialized,
/// with nothing of the document kept: for a value whose JSON objects come with
/// their keys in canonical order already (structs whose fields are declared in that
/// order, and no maps), so that laying them out is all that is left to do. Every
/// key is checked against the one before it in its object: a key that is not after
/// it (out of order, or twice) stops the writing with [`CanonicalError::OutOfOrder`],
/// a float with [`CanonicalError::Float`], so what is written is `to_vec_pretty`'s
/// bytes or an error, never other bytes. What `out` has then is a part of a
/// document: write to a temporary file or a buffer where that matters.
///
/// An SBOM of 20,000 components was a `serde_json::Value` of some 200 MiB (and a
/// 13 MB `Vec` of its bytes); written this way it is a stream.
pub fn to_writer_pretty_in_order<W: Write, T: Serialize + ?Sized>(
    out: W,
    value: &T,
) -> Result<(), CanonicalError> {
    let mut problem = None;
    let mut ser = serde_json::Serializer::with_formatter(
        out,
        InOrder {
            pretty: serde_json::ser::PrettyFormatter::with_indent(b"  "),
            keys: Vec::new(),
            key: None,
            problem: &mut problem,
        },
    );
    let written = value.serialize(&mut ser);
    drop(ser);
    match (written, problem) {
        (_, Some(p)) => Err(p),
        (Ok(()), None) => Ok(()),
        (Err(e), None) => Err(e.into()),
    }
}

/// serde_json's pretty layout (two spaces, `": "`), which is [`lay_out`]'s, with
/// the checks [`to_writer_pretty_in_order`] makes.
struct InOrder<'p> {
    pretty: serde_json::ser::PrettyFormatter<'static>,
    /// Per open object, its last key.
    keys: Vec<Option<String>>,
    /// The key being written, unescaped, while one is.
    key: Option<String>,
    /// Why the writing stopped, when it stopped for a reason of ours.
    problem: &'p mut Option<CanonicalError>,
}

impl InOrder<'_> {
    fn stop(&mut self, problem: CanonicalError) -> std::io::Error {
        let e = std::io::Error::other(problem.to_string());
        *self.problem = Some(problem);
        e
    }
}

impl serde_json::ser::Formatter for InOrder<'_> {
    fn write_f32<W: ?Sized + Write>(&mut self, _: &mut W, x: f32) -> std::io::Result<()> {
        self.write_f64(&mut std::io::sink(), f64::from(x))
    }

    fn write_f64<W: ?Sized + Write>(&mut self, _: &mut W, x: f64) -> std::io::Result<()> {
        let shown =
            serde_json::Number::from_f64(x).map_or_else(|| x.to_string(), |n| n.to_string());
        Err(self.stop(CanonicalError::Float(shown)))
    }

    fn write_number_str<W: ?Sized + Write>(&mut self, _: &mut W, n: &str) -> std::io::Result<()> {
        Err(self.stop(CanonicalError::Float(n.to_string())))
    }

    fn write_raw_fragment<W: ?Sized + Write>(&mut self, _: &mut W, _: &str) -> std::io::Result<()> {
        Err(self.stop(CanonicalError::OutOfOrder {
            key: "(raw JSON)".into(),
            after: String::new(),
        }))
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        if let Some(key) = &mut self.key {
            key.push_str(fragment);
        }
        w.write_all(fragment.as_bytes())
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> std::io::Result<()> {
        use serde_json::ser::CharEscape::*;
        if let Some(key) = &mut self.key {
            key.push(match escape {
                Quote => '"',
                ReverseSolidus => '\\',
                Solidus => '/',
                Backspace => '\u{8}',
                FormFeed => '\u{c}',
                LineFeed => '\n',
                CarriageReturn => '\r',
                Tab => '\t',
                AsciiControl(b) => char::from(b),
            });
        }
        serde_json::ser::CompactFormatter.write_char_escape(w, escape)
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.begin_array(w)
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.end_array(w)
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.pretty.begin_array_value(w, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.end_array_value(w)
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.keys.push(None);
        self.pretty.begin_object(w)
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.keys.pop();
        self.pretty.end_object(w)
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.key = Some(String::new());
        self.pretty.begin_object_key(w, first)
    }

    fn end_object_key<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        let key = self.key.take().unwrap_or_default();
        let last = self.keys.last_mut().and_then(Option::take);
        if let Some(after) = last.filter(|l| key_order(l, &key).is_ge()) {
            return Err(self.stop(CanonicalError::OutOfOrder { key, after }));
        }
        if let Some(slot) = self.keys.last_mut() {
            *slot = Some(key);
        }
        self.pretty.end_object_key(w)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.begin_object_value(w)
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.end_object_value(w)
    }
}

/// [`to_vec_pretty`] of a value that is a `serde_json::Value` already: the way
/// the layout was made before [`lay_out`], kept to hold it to the same bytes.
#[cfg(test)]
fn value_to_vec_pretty(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::new();
    write_pretty(&mut out, value, 0)?;
    Ok(out)
}

/// A new line indented to `depth`.
fn newline<W: Write + ?Sized>(out: &mut W, depth: usize) -> std::io::Result<()> {
    const SPACES: [u8; 64] = [b' '; 64];
    out.write_all(b"\n")?;
    let mut left = 2 * depth;
    while left > 0 {
        let n = left.min(SPACES.len());
        out.write_all(&SPACES[..n])?;
        left -= n;
    }
    Ok(())
}

#[cfg(test)]
fn write_pretty(out: &mut Vec<u8>, v: &Value, depth: usize) -> Result<(), CanonicalError> {
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                newline(out, depth + 1).map_err(serde_json::Error::io)?;
                write_pretty(out, item, depth + 1)?;
            }
            newline(out, depth).map_err(serde_json::Error::io)?;
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
                newline(out, depth + 1).map_err(serde_json::Error::io)?;
                serde_json::to_writer(&mut *out, k)?;
                out.extend_from_slice(b": ");
                write_pretty(out, val, depth + 1)?;
            }
            newline(out, depth).map_err(serde_json::Error::io)?;
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
///
/// Canonical bytes pass in one streaming pass that keeps no tree of the value: a
/// 20,000-object manifest (9 MiB) made a 47 MiB `serde_json::Value` here, the peak
/// of every command that reads a head. Bytes that fail it are checked again the
/// long way, which finds the first byte that differs from the canonical form of
/// their value (the error's offset) and is the rule itself: the streaming pass
/// only accepts bytes it would accept.
pub fn check(bytes: &[u8]) -> Result<(), CanonicalError> {
    if streams_canonically(bytes) {
        return Ok(());
    }
    the_long_way(bytes)
}

/// [`check`] with the value parsed whole, then written canonically and compared.
fn the_long_way(bytes: &[u8]) -> Result<(), CanonicalError> {
    let value: Value = serde_json::from_slice(bytes)?;
    let mut canonical = Compare::new(bytes);
    write_value(&mut canonical, &value)?;
    drop(value);
    let shorter = (canonical.at < bytes.len()).then_some(canonical.at);
    match canonical.differs.or(shorter) {
        Some(at) => Err(CanonicalError::NotCanonical { at }),
        None => Ok(()),
    }
}

/// Whether `bytes` are canonical, found by writing each value's canonical form as
/// serde_json parses it and comparing as it goes ([`Compare`]), so nothing is kept
/// but the key before the current one at each level. Where [`write_value`] would
/// sort an object's keys, this requires them already in order, strictly (a
/// duplicate is not in order): then the two write the same bytes, and this is true
/// exactly when [`check`]'s long way finds no difference. It stops at the first
/// byte that differs.
fn streams_canonically(bytes: &[u8]) -> bool {
    let mut out = Compare::new(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Canon {
        out: &mut out,
        before: b"",
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    parsed.is_ok() && out.differs.is_none() && out.at == bytes.len()
}

/// One value being checked by [`streams_canonically`]: `before` is what the
/// canonical form has just before it (the `,` between array items), written only
/// once the parser has found that the item is there.
struct Canon<'o, 'e> {
    out: &'o mut Compare<'e>,
    before: &'static [u8],
}

impl Canon<'_, '_> {
    /// Writes `bytes` (after `before`) and stops the parse once they differ.
    fn put<E: serde::de::Error>(&mut self, bytes: &[u8]) -> Result<(), E> {
        let _ = self.out.write_all(std::mem::take(&mut self.before));
        let _ = self.out.write_all(bytes);
        self.stop_if_differs()
    }

    fn stop_if_differs<E: serde::de::Error>(&self) -> Result<(), E> {
        match self.out.differs {
            Some(_) => Err(E::custom("not the canonical form")),
            None => Ok(()),
        }
    }

    /// An integer as [`write_value`] writes a `serde_json::Number` holding it.
    fn number<E: serde::de::Error>(&mut self, n: impl std::fmt::Display) -> Result<(), E> {
        self.put(b"")?;
        let _ = write!(self.out, "{n}");
        self.stop_if_differs()
    }

    fn string<E: serde::de::Error>(&mut self, s: &str) -> Result<(), E> {
        self.put(b"")?;
        // Every byte is looked at (no early exit), which the compiler vectorizes.
        if !s.bytes().fold(false, |any, b| any | needs_escape(b)) {
            // Nearly every string of a manifest (digests, names, paths): its
            // canonical form is itself in quotes, compared without going through
            // serde_json's escaper (a third of this check, before).
            let _ = self.out.write_all(b"\"");
            let _ = self.out.write_all(s.as_bytes());
            let _ = self.out.write_all(b"\"");
        } else {
            serde_json::to_writer(&mut *self.out, s).map_err(E::custom)?;
        }
        self.stop_if_differs()
    }
}

/// Whether serde_json's writer escapes byte `b` of a string: the control
/// characters, `"` and `\`, and nothing else (not `/`, not DEL, no byte of a
/// character beyond ASCII).
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// An object's key, borrowed from the bytes unless it holds an escape: the check
/// keeps the key before the current one to see the order, and a `String` for each
/// was an allocation per member.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(s))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(s))
    }
}

impl<'de> DeserializeSeed<'de> for Canon<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canon<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
        self.put(b"null")
    }

    fn visit_bool<E: serde::de::Error>(mut self, b: bool) -> Result<(), E> {
        self.put(if b { b"true" } else { b"false" })
    }

    fn visit_u64<E: serde::de::Error>(mut self, n: u64) -> Result<(), E> {
        self.number(n)
    }

    fn visit_i64<E: serde::de::Error>(mut self, n: i64) -> Result<(), E> {
        self.number(n)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom("a float"))
    }

    fn visit_str<E: serde::de::Error>(mut self, s: &str) -> Result<(), E> {
        self.string(s)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut items: A) -> Result<(), A::Error> {
        self.put(b"[")?;
        let mut before: &'static [u8] = b"";
        while let Some(()) = items.next_element_seed(Canon {
            out: &mut *self.out,
            before,
        })? {
            before = b",";
        }
        self.put(b"]")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.put(b"{")?;
        let mut last: Option<std::borrow::Cow<'de, str>> = None;
        while let Some(key) = map.next_key_seed(Key)? {
            if let Some(last) = &last {
                if key_order(last, &key).is_ge() {
                    return Err(serde::de::Error::custom("keys out of order"));
                }
                self.put(b",")?;
            }
            self.string(&key)?;
            self.put(b":")?;
            map.next_value_seed(Canon {
                out: &mut *self.out,
                before: b"",
            })?;
            last = Some(key);
        }
        self.put(b"}")
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

impl<'a> Compare<'a> {
    fn new(expect: &'a [u8]) -> Self {
        Compare {
            expect,
            at: 0,
            differs: None,
        }
    }
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
    use proptest::prelude::*;
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

    /// The streaming pass's plain-string path (no escaper) and its borrowed keys
    /// agree with the long way on the bytes near the edge of "needs an escape".
    #[test]
    fn strings_pass_the_streaming_check_only_in_serde_jsons_spelling() {
        for good in [
            "{\"a\":\"\u{7f}\"}",
            "{\"a\":\"/\u{e9}\u{10000}\"}",
            r#"{"a":"x\"y\\z\u001f"}"#,
            r#"{"a":"x\\y"}"#,
            r#"{"a":"x\"y"}"#,
            r#"{"a":"x\ty"}"#,
            r#"{"a":"\u001f"}"#,
            r#"{"a\u0000":1,"a\nb":2}"#,
            r#"{"\u0001":1,"a":2}"#,
        ] {
            assert!(streams_canonically(good.as_bytes()), "{good}");
            assert!(the_long_way(good.as_bytes()).is_ok(), "{good}");
        }
        for bad in [
            r#"{"a":"\u007f"}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a":"\u001F"}"#,
            r#"{"a\nb":1,"a\u0000":2}"#,
            r#"{"\u0041":1}"#,
        ] {
            assert!(!streams_canonically(bad.as_bytes()), "{bad}");
            assert!(the_long_way(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let text = proptest::collection::vec(
            prop_oneof![
                any::<char>(),
                proptest::char::range('\0', '\u{7f}'),
                Just('\u{2028}'),
                Just('\u{ffff}'),
                Just('\u{10000}'),
            ],
            0..8,
        )
        .prop_map(|v| v.into_iter().collect::<String>());
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            prop_oneof![Just(0u64), Just(9), Just(10)].prop_map(Value::from),
            text.clone().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map(text.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A byte that makes a near miss of canonical JSON where it lands.
    fn near_miss() -> impl Strategy<Value = u8> {
        prop_oneof![
            proptest::sample::select(&b" \t\n\r{}[],:\"\\/0123456789-+.eEabfnrtu"[..]),
            any::<u8>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The streaming pass accepts exactly what the long way accepts: every
        /// canonical form, and none of the bytes one edit away from one unless the
        /// long way accepts them too (an edit that makes another canonical value).
        #[test]
        fn the_streaming_pass_accepts_what_the_long_way_accepts(
            v in json(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, near_miss()), 0..3),
        ) {
            let mut bytes = to_vec(&v).unwrap();
            prop_assert!(streams_canonically(&bytes));
            for (at, how, byte) in edits {
                let i = at.index(bytes.len() + 1);
                match how {
                    0 if i < bytes.len() => { bytes.remove(i); }
                    1 if i < bytes.len() => bytes[i] = byte,
                    2 if i + 1 < bytes.len() => bytes.swap(i, i + 1),
                    _ => bytes.insert(i, byte),
                }
                prop_assert_eq!(
                    streams_canonically(&bytes),
                    the_long_way(&bytes).is_ok(),
                    "{}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
    }

    /// What [`to_vec`] wrote before it stopped making a `Value`.
    fn through_a_value<T: Serialize>(v: &T) -> Result<Vec<u8>, CanonicalError> {
        let value = serde_json::to_value(v)?;
        let mut out = Vec::new();
        write_value(&mut out, &value)?;
        Ok(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// `to_vec` writes what the `Value` of the value writes canonically, keys in
        /// any order in (a `BTreeMap` of them is sorted by bytes, not UTF-16).
        #[test]
        fn to_vec_writes_what_the_value_writes(v in json(), keys in proptest::collection::vec((json(), any::<u8>()), 0..6)) {
            prop_assert_eq!(to_vec(&v).unwrap(), through_a_value(&v).unwrap());
            let unordered: Vec<(String, Value)> = keys
                .into_iter()
                .map(|(v, k)| (["b", "a", "\u{e9}", "\u{10000}", "\u{ff61}", "A"][k as usize % 6].to_string(), v))
                .collect();
            struct Members(Vec<(String, Value)>);
            impl Serialize for Members {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
                }
            }
            let m = Members(unordered);
            prop_assert_eq!(to_vec(&m).unwrap(), through_a_value(&m).unwrap());
        }
    }

    /// Every shape serde gives a value comes out as its `Value` would: derived
    /// structs with fields out of name order, each kind of enum variant, options,
    /// bytes, characters and integer map keys.
    #[test]
    fn to_vec_writes_every_serde_shape_as_the_value_does() {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        enum Shape {
            Unit,
            Newtype(u8),
            Tuple(i32, String),
            Struct { z: bool, a: Option<u64> },
        }
        #[derive(Serialize)]
        struct Tuple(u8, char);
        #[derive(Serialize)]
        struct Outer {
            zeta: Vec<Shape>,
            #[serde(skip_serializing_if = "Option::is_none")]
            gone: Option<u8>,
            beta: Option<Tuple>,
            #[serde(with = "serde_bytes_as_seq")]
            bytes: Vec<u8>,
            alpha: std::collections::BTreeMap<u32, &'static str>,
            #[serde(flatten)]
            extra: std::collections::BTreeMap<String, i64>,
        }
        mod serde_bytes_as_seq {
            pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(b)
            }
        }
        let v = Outer {
            zeta: vec![
                Shape::Unit,
                Shape::Newtype(7),
                Shape::Tuple(-3, "t\u{1}\"".into()),
                Shape::Struct { z: true, a: None },
            ],
            gone: None,
            beta: Some(Tuple(1, '\u{10000}')),
            bytes: vec![0, 255],
            alpha: [(10, "ten"), (9, "nine")].into_iter().collect(),
            extra: [("aaa".to_string(), -1), ("zzz".to_string(), 2)]
                .into_iter()
                .collect(),
        };
        let bytes = to_vec(&v).unwrap();
        assert_eq!(bytes, through_a_value(&v).unwrap());
        check(&bytes).unwrap();
    }

    /// A value nested deeper than a reader parses is refused as it is written.
    #[test]
    fn to_vec_refuses_what_no_reader_parses() {
        let nest = |n: usize| (0..n).fold(Value::Null, |inner, _| Value::Array(vec![inner]));
        let deepest = to_vec(&nest(127)).unwrap();
        serde_json::from_slice::<Value>(&deepest).unwrap();
        let err = to_vec(&nest(128)).unwrap_err();
        assert!(err.to_string().contains("deeper than 127"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// `to_vec_pretty` lays out the same bytes as the `Value` way
        /// ([`value_to_vec_pretty`]) did, and they read back as the same value.
        #[test]
        fn to_vec_pretty_writes_what_the_value_writes(v in json()) {
            let pretty = to_vec_pretty(&v).unwrap();
            prop_assert_eq!(&pretty, &value_to_vec_pretty(&v).unwrap());
            prop_assert_eq!(serde_json::from_slice::<Value>(&pretty).unwrap(), v);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// `to_writer_pretty_in_order` writes `to_vec_pretty`'s bytes, or stops
        /// because an object's keys were not in UTF-16 order (a `Value`'s map is
        /// sorted by bytes, which differs above U+FFFF).
        #[test]
        fn to_writer_pretty_in_order_writes_what_to_vec_pretty_writes(v in json()) {
            let mut out = Vec::new();
            match to_writer_pretty_in_order(&mut out, &v) {
                Ok(()) => prop_assert_eq!(out, to_vec_pretty(&v).unwrap()),
                Err(CanonicalError::OutOfOrder { key, after }) => {
                    prop_assert!(after.as_bytes() < key.as_bytes());
                    prop_assert!(after.encode_utf16().cmp(key.encode_utf16()).is_gt());
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
    }

    #[test]
    fn to_writer_pretty_in_order_stops_at_a_key_out_of_order_or_a_float() {
        #[derive(Serialize)]
        struct Sorted {
            a: u8,
            #[serde(rename = "b\n")]
            b: Vec<Unsorted>,
        }
        #[derive(Serialize)]
        struct Unsorted {
            z: u8,
            #[serde(rename = "y\"")]
            y: u8,
        }
        let mut out = Vec::new();
        let sorted = Sorted { a: 1, b: vec![] };
        to_writer_pretty_in_order(&mut out, &sorted).unwrap();
        assert_eq!(out, to_vec_pretty(&sorted).unwrap());
        let unsorted = Sorted {
            a: 1,
            b: vec![Unsorted { z: 1, y: 2 }],
        };
        match to_writer_pretty_in_order(Vec::new(), &unsorted) {
            Err(CanonicalError::OutOfOrder { key, after }) => {
                assert_eq!((key.as_str(), after.as_str()), ("y\"", "z"))
            }
            other => panic!("{other:?}"),
        }
        let twice = json!([{"a": 1}]);
        struct Twice;
        impl Serialize for Twice {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map([("a", 1), ("a", 2)])
            }
        }
        assert!(matches!(
            to_writer_pretty_in_order(Vec::new(), &Twice),
            Err(CanonicalError::OutOfOrder { .. })
        ));
        let mut out = Vec::new();
        to_writer_pretty_in_order(&mut out, &twice).unwrap();
        assert_eq!(out, to_vec_pretty(&twice).unwrap());
        match to_writer_pretty_in_order(Vec::new(), &json!({"a": [1, 1.5]})) {
            Err(CanonicalError::Float(f)) => assert_eq!(f, "1.5"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn to_vec_orders_objects_of_every_size() {
        struct Members(Vec<(String, Value)>);
        impl Serialize for Members {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
            }
        }
        // Reversed, with every seventh key given twice, on both sides of IN_PLACE.
        for n in [0, 1, 2, IN_PLACE - 1, IN_PLACE, IN_PLACE + 1, 100] {
            let members: Vec<(String, Value)> = (0..n)
                .rev()
                .flat_map(|i| {
                    let key = format!(
                        "k{}{}",
                        i % 10,
                        if i % 3 == 0 { "\u{10000}" } else { "\u{ff61}" }
                    );
                    let twice = if i % 7 == 0 { 2 } else { 1 };
                    (0..twice).map(move |t| (key.clone(), json!([i, t, {"z": i, "a": [t]}])))
                })
                .collect();
            let m = Members(members);
            assert_eq!(
                to_vec(&m).unwrap(),
                through_a_value(&m).unwrap(),
                "{n} members"
            );
        }
    }

    #[test]
    fn to_vec_names_a_float_as_the_value_way_does() {
        for v in [
            json!({"a": [1, {"b": 1.5}]}),
            json!(1e300),
            json!(-0.0),
            json!(2.0),
        ] {
            match (to_vec(&v), through_a_value(&v)) {
                (Err(CanonicalError::Float(a)), Err(CanonicalError::Float(b))) => assert_eq!(a, b),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            to_vec(&f64::NAN).unwrap(),
            through_a_value(&f64::NAN).unwrap()
        );
    }

    #[test]
    fn the_streaming_pass_stops_where_the_long_way_does() {
        // Nesting past serde_json's limit, numbers past 64 bits, `-0`, unpaired
        // surrogates and keys equal in bytes or in UTF-16 order only.
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let cases = [
            deep(127),
            deep(128),
            deep(200),
            "18446744073709551615".into(),
            "18446744073709551616".into(),
            "-9223372036854775808".into(),
            "-9223372036854775809".into(),
            "-0".into(),
            "0".into(),
            "00".into(),
            r#""\ud800""#.into(),
            r#""\ud83d\ude00""#.into(),
            "\"\u{7f}\"".into(),
            "\"\u{1}\"".into(),
            r#"{"a":1,"a":1}"#.into(),
            "{\"\u{ff61}\":1,\"\u{10000}\":2}".into(),
            "{\"\u{10000}\":1,\"\u{ff61}\":2}".into(),
            r#"{"":[],"a":{}}"#.into(),
            "".into(),
            "[1,]".into(),
            "[,1]".into(),
            "{\"a\":1,}".into(),
        ];
        for case in cases {
            assert_eq!(
                streams_canonically(case.as_bytes()),
                the_long_way(case.as_bytes()).is_ok(),
                "{case}"
            );
        }
        assert!(streams_canonically(deep(127).as_bytes()));
        assert!(streams_canonically(
            "{\"\u{10000}\":1,\"\u{ff61}\":2}".as_bytes()
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
