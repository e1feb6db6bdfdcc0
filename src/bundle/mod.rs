//! The bundle format, pure.
//!
//! Everything here works on `std::io` readers and writers and never touches the
//! network, a subprocess or an async runtime, so it can be tested byte for byte
//! against the golden vectors in `bundle-spec/` and reused by any front end.
//! `bundle-spec/format.md` is the normative description; this module is its
//! implementation.

pub mod canonical;
pub mod decode;
pub mod delta;
pub mod diff;
pub mod digest;
pub mod frames;
pub mod inventory;
pub mod keys;
pub mod layout;
pub mod manifest;
pub mod meta;
pub mod oci;
pub mod reader;
pub mod receipt;
pub mod referrers;
pub mod signature;
pub mod volumes;
pub mod writer;

pub use digest::Digest;
pub use manifest::{BlobEntry, Kind, Manifest, Object};
