//! A serde `Serializer` that writes canonical JSON as the value is serialized
//! ([`super::to_vec`]).
//!
//! It used to be serde_json's bytes parsed again and written canonically: three
//! passes over a manifest (count, write, parse), the parse the dearest, and two
//! copies of it held at once. Now strings are escaped by serde_json itself (the
//! escapes the format specifies are its own), numbers are written as integers, and
//! an object's members are written as they come, each remembered with its key and
//! place, then put in canonical order in place only when they came out of it
//! ([`super::put_in_order`], as for the parse before): a derived struct whose
//! fields are in a different order than their names costs one rotation of a few
//! members, and the manifest's two big arrays are never copied.

use std::borrow::Cow;
use std::fmt::Display;
use std::io::Write;
use std::ops::Range;

use serde::ser::{self, Serialize};

use super::{key_order, put_in_order, CanonicalError};

/// Why a value could not be written: the [`CanonicalError`] it becomes.
#[derive(Debug)]
pub(super) struct WriteError(pub(super) CanonicalError);

impl Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for WriteError {}

impl ser::Error for WriteError {
    fn custom<T: Display>(msg: T) -> Self {
        WriteError(CanonicalError::Json(
            <serde_json::Error as ser::Error>::custom(msg),
        ))
    }
}

impl From<serde_json::Error> for WriteError {
    fn from(e: serde_json::Error) -> Self {
        WriteError(CanonicalError::Json(e))
    }
}

/// The deepest nesting serde_json reads (its recursion limit), and so every
/// reader here: a value nested deeper is refused as it is written, not left to
/// fail on the other side of the air gap.
const MAX_DEPTH: usize = 127;

/// Writes one value canonically at the end of `out`, inside `depth` arrays and
/// objects.
pub(super) struct Writer<'o> {
    pub(super) out: &'o mut Vec<u8>,
    pub(super) depth: usize,
}

/// The depth of an array or object opened inside `depth` others, if it is allowed.
fn deeper(depth: usize) -> Result<usize, WriteError> {
    if depth >= MAX_DEPTH {
        return Err(<WriteError as ser::Error>::custom(format_args!(
            "a value nested deeper than {MAX_DEPTH} arrays and objects, more than a reader parses"
        )));
    }
    Ok(depth + 1)
}

impl Writer<'_> {
    /// Opens `{"variant":` (serde_json's form of an enum variant with data) and
    /// returns the depth of what follows in it.
    fn variant(&mut self, variant: &str) -> Result<usize, WriteError> {
        let depth = deeper(self.depth)?;
        self.out.push(b'{');
        self.string(variant)?;
        self.out.push(b':');
        Ok(depth)
    }

    fn string(&mut self, s: &str) -> Result<(), WriteError> {
        serde_json::to_writer(&mut *self.out, s).map_err(WriteError::from)
    }

    fn integer(self, n: impl Serialize) -> Result<(), WriteError> {
        serde_json::to_writer(&mut *self.out, &n).map_err(WriteError::from)
    }

    /// A float is an error, named as serde_json writes it; one that is not
    /// finite is `null`, as serde_json (and so the `Value` of it) writes it.
    fn float(self, x: f64) -> Result<(), WriteError> {
        match serde_json::Number::from_f64(x) {
            Some(n) => Err(WriteError(CanonicalError::Float(n.to_string()))),
            None => {
                self.out.extend_from_slice(b"null");
                Ok(())
            }
        }
    }
}

/// The integer methods of a serializer, each `$body` with the serializer as `$s`
/// and the integer as `$v`: every width is written alike.
macro_rules! integers {
    (|$s:ident, $v:ident| $body:expr; $($method:ident: $t:ty),*) => {$(
        fn $method(self, $v: $t) -> Result<Self::Ok, WriteError> {
            let $s = self;
            $body
        }
    )*};
}

impl<'o> ser::Serializer for Writer<'o> {
    type Ok = ();
    type Error = WriteError;
    type SerializeSeq = Items<'o>;
    type SerializeTuple = Items<'o>;
    type SerializeTupleStruct = Items<'o>;
    type SerializeTupleVariant = Items<'o>;
    type SerializeMap = Members<'o>;
    type SerializeStruct = Members<'o>;
    type SerializeStructVariant = Members<'o>;

    fn serialize_bool(self, v: bool) -> Result<(), WriteError> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    integers!(|w, v| w.integer(v);
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128
    );

    fn serialize_f32(self, v: f32) -> Result<(), WriteError> {
        // The shortest decimal of the f32, as serde_json writes it, read as an f64.
        self.float(v.to_string().parse().unwrap_or(f64::NAN))
    }

    fn serialize_f64(self, v: f64) -> Result<(), WriteError> {
        self.float(v)
    }

    fn serialize_char(mut self, v: char) -> Result<(), WriteError> {
        self.string(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(mut self, v: &str) -> Result<(), WriteError> {
        self.string(v)
    }

    /// Written in place, escaped only if it has to be: digests and NAR hashes are
    /// written this way, a few for every object, and making each a `String` first
    /// was a fifth of writing a manifest.
    fn collect_str<T: ?Sized + Display>(mut self, value: &T) -> Result<(), WriteError> {
        let quote = self.out.len();
        self.out.push(b'"');
        // Writing to a Vec cannot fail.
        let _ = write!(self.out, "{value}");
        let plain = self.out[quote + 1..]
            .iter()
            .all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
        if plain {
            self.out.push(b'"');
            return Ok(());
        }
        let text = self.out.split_off(quote + 1);
        self.out.truncate(quote);
        self.string(&String::from_utf8_lossy(&text))
    }

    /// As serde_json writes bytes: an array of numbers.
    fn serialize_bytes(self, v: &[u8]) -> Result<(), WriteError> {
        use ser::SerializeSeq;
        let mut items = self.serialize_seq(Some(v.len()))?;
        for b in v {
            items.serialize_element(b)?;
        }
        items.end()
    }

    fn serialize_none(self) -> Result<(), WriteError> {
        self.serialize_unit()
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), WriteError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), WriteError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), WriteError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), WriteError> {
        self.string(variant)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), WriteError> {
        value.serialize(self)
    }

    /// `{"variant":value}`, as serde_json writes it: one member, in order.
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), WriteError> {
        let depth = self.variant(variant)?;
        value.serialize(Writer {
            out: &mut *self.out,
            depth,
        })?;
        self.out.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Items<'o>, WriteError> {
        Ok(Items::open(self.out, deeper(self.depth)?, false))
    }

    fn serialize_tuple(self, len: usize) -> Result<Items<'o>, WriteError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Items<'o>, WriteError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Items<'o>, WriteError> {
        let depth = deeper(self.variant(variant)?)?;
        Ok(Items::open(self.out, depth, true))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Members<'o>, WriteError> {
        Ok(Members::open(self.out, deeper(self.depth)?, false))
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Members<'o>, WriteError> {
        Ok(Members::open(self.out, deeper(self.depth)?, false))
    }

    fn serialize_struct_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Members<'o>, WriteError> {
        let depth = deeper(self.variant(variant)?)?;
        Ok(Members::open(self.out, depth, true))
    }
}

/// An array being written, `depth` deep.
pub(super) struct Items<'o> {
    out: &'o mut Vec<u8>,
    depth: usize,
    first: bool,
    /// Inside `{"variant":…}`, closed with the array.
    in_variant: bool,
}

impl<'o> Items<'o> {
    fn open(out: &'o mut Vec<u8>, depth: usize, in_variant: bool) -> Items<'o> {
        out.push(b'[');
        Items {
            out,
            depth,
            first: true,
            in_variant,
        }
    }

    fn item<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), WriteError> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        value.serialize(Writer {
            out: &mut *self.out,
            depth: self.depth,
        })
    }

    fn close(self) -> Result<(), WriteError> {
        self.out.push(b']');
        if self.in_variant {
            self.out.push(b'}');
        }
        Ok(())
    }
}

/// The four kinds of sequence serde tells apart are one JSON array here.
macro_rules! array_kinds {
    ($($kind:ident :: $add:ident),*) => {$(
        impl ser::$kind for Items<'_> {
            type Ok = ();
            type Error = WriteError;

            fn $add<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), WriteError> {
                self.item(value)
            }

            fn end(self) -> Result<(), WriteError> {
                self.close()
            }
        }
    )*};
}

array_kinds!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// An object being written: its members in `out` from `body`, each `"key":value`
/// at its place, put in canonical order at the end when they came out of it.
pub(super) struct Members<'o> {
    out: &'o mut Vec<u8>,
    depth: usize,
    body: usize,
    members: Vec<(Cow<'static, str>, Range<usize>)>,
    in_order: bool,
    /// The key whose value comes next, and where its member starts.
    pending: Option<(Cow<'static, str>, usize)>,
    /// Inside `{"variant":…}`, closed with the object.
    in_variant: bool,
}

impl<'o> Members<'o> {
    fn open(out: &'o mut Vec<u8>, depth: usize, in_variant: bool) -> Members<'o> {
        out.push(b'{');
        Members {
            body: out.len(),
            out,
            depth,
            members: Vec::new(),
            in_order: true,
            pending: None,
            in_variant,
        }
    }

    fn key(&mut self, key: Cow<'static, str>) -> Result<(), WriteError> {
        if let Some((last, _)) = self.members.last() {
            self.in_order &= key_order(last, &key).is_lt();
            self.out.push(b',');
        }
        let start = self.out.len();
        serde_json::to_writer(&mut *self.out, &*key)?;
        self.out.push(b':');
        self.pending = Some((key, start));
        Ok(())
    }

    fn value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), WriteError> {
        let (key, start) = self
            .pending
            .take()
            .ok_or_else(|| <WriteError as ser::Error>::custom("a map value without its key"))?;
        value.serialize(Writer {
            out: &mut *self.out,
            depth: self.depth,
        })?;
        self.members
            .push((key, start - self.body..self.out.len() - self.body));
        Ok(())
    }

    fn close(self) -> Result<(), WriteError> {
        if !self.in_order {
            put_in_order(self.out, self.body, self.members);
        }
        self.out.push(b'}');
        if self.in_variant {
            self.out.push(b'}');
        }
        Ok(())
    }
}

impl ser::SerializeMap for Members<'_> {
    type Ok = ();
    type Error = WriteError;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), WriteError> {
        let key = key.serialize(KeyName)?;
        self.key(Cow::Owned(key))
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), WriteError> {
        self.value(value)
    }

    fn end(self) -> Result<(), WriteError> {
        self.close()
    }
}

/// A struct and a struct variant's fields are one JSON object's members.
macro_rules! object_kinds {
    ($($kind:ident),*) => {$(
        impl ser::$kind for Members<'_> {
            type Ok = ();
            type Error = WriteError;

            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), WriteError> {
                self.key(Cow::Borrowed(key))?;
                self.value(value)
            }

            fn end(self) -> Result<(), WriteError> {
                self.close()
            }
        }
    )*};
}

object_kinds!(SerializeStruct, SerializeStructVariant);

/// A map key as the string serde_json makes of it: a string, a character, an
/// integer (written in decimal), a unit variant's name; anything else is refused,
/// as serde_json refuses it, and so is a float, which serde_json would write as its
/// decimal: the format has no floats.
struct KeyName;

fn not_a_key<T>() -> Result<T, WriteError> {
    Err(<WriteError as ser::Error>::custom("key must be a string"))
}

impl ser::Serializer for KeyName {
    type Ok = String;
    type Error = WriteError;
    type SerializeSeq = ser::Impossible<String, WriteError>;
    type SerializeTuple = ser::Impossible<String, WriteError>;
    type SerializeTupleStruct = ser::Impossible<String, WriteError>;
    type SerializeTupleVariant = ser::Impossible<String, WriteError>;
    type SerializeMap = ser::Impossible<String, WriteError>;
    type SerializeStruct = ser::Impossible<String, WriteError>;
    type SerializeStructVariant = ser::Impossible<String, WriteError>;

    fn serialize_str(self, v: &str) -> Result<String, WriteError> {
        Ok(v.to_string())
    }

    fn serialize_char(self, v: char) -> Result<String, WriteError> {
        Ok(v.to_string())
    }

    integers!(|_key, v| Ok(v.to_string());
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128
    );

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, WriteError> {
        Ok(variant.to_string())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, WriteError> {
        value.serialize(self)
    }

    fn serialize_bool(self, _v: bool) -> Result<String, WriteError> {
        not_a_key()
    }

    fn serialize_f32(self, _v: f32) -> Result<String, WriteError> {
        not_a_key()
    }

    fn serialize_f64(self, _v: f64) -> Result<String, WriteError> {
        not_a_key()
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<String, WriteError> {
        not_a_key()
    }

    fn serialize_none(self) -> Result<String, WriteError> {
        not_a_key()
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _value: &T) -> Result<String, WriteError> {
        not_a_key()
    }

    fn serialize_unit(self) -> Result<String, WriteError> {
        not_a_key()
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, WriteError> {
        not_a_key()
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String, WriteError> {
        not_a_key()
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, WriteError> {
        not_a_key()
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, WriteError> {
        not_a_key()
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, WriteError> {
        not_a_key()
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, WriteError> {
        not_a_key()
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, WriteError> {
        not_a_key()
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, WriteError> {
        not_a_key()
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, WriteError> {
        not_a_key()
    }
}
