//! Nix's own formats, pure: no processes, no files, no network.
//!
//! A bundle carries Nix store paths as NARs with the metadata Nix keeps for them
//! (NarHash, NarSize, References, Deriver, CA, signatures), and the importer turns
//! them back into what Nix reads: a binary cache (`nix-cache-info`, `.narinfo` files,
//! `nar/<hash>.nar.zst`). Everything about those formats lives here, apart from the
//! code that runs `nix`, so it can be tested byte for byte against values computed by
//! the real Nix (the tests carry such vectors). Everything read from a bundle is
//! hostile, so every reader here refuses what Nix would not write, and every writer
//! refuses a value that would change the meaning of what it writes:
//!
//! - [`nix32`]: Nix's base-32 (its own alphabet, least significant bits first);
//! - [`nar`]: the NAR framing, for writing; [`nar_check`]: a streaming NAR
//!   validator that refuses what `nix-store --dump` would never write;
//! - [`dump`]: the NAR of a store path, written by walking the file system;
//! - [`serve_proto`]: what `nix-store --serve` reads and writes, for adding paths
//!   with their signatures and asking which are valid;
//! - [`NarHash`] parsing from any of the three spellings Nix prints, and
//!   [`StorePath`]: a checked `/nix/store/<hash>-<name>`, so names from a bundle can
//!   never become a path outside the cache or an option to a command;
//! - [`fingerprint`]: the text a Nix path signature covers, and
//!   [`validate_path_signature`];
//! - [`NarInfo`]: the `.narinfo` text writer, and [`validate_ca`];
//! - [`PathInfo`]: `nix path-info --json` parsing;
//! - [`closure_order`]: references before the paths that use them.

pub mod closure;
pub mod dump;
pub mod nar;
pub mod nar_check;
pub mod narinfo;
pub mod nix32;
pub mod path_info;
pub mod serve_proto;
pub mod signature;
pub mod store_path;

pub use closure::closure_order;
pub use nar_check::{check_nar, NarChecker, NarError, NarReadError, NarSummary};
pub use narinfo::{cache_info, validate_ca, NarInfo, NarInfoIdentity};
pub use path_info::{parse_path_info, PathInfo, PathInfoError, PathInfoJson};
pub use signature::{fingerprint, sign_path, validate_path_signature, verify_path};
pub use store_path::{valid_root_name, NarHash, StorePath};

/// The Nix store directory this implementation reads and writes.
pub const STORE_DIR: &str = "/nix/store";

/// Media type of a zstd-compressed NAR blob in a bundle.
pub const NAR_ZSTD_MEDIA_TYPE: &str = "application/vnd.gapbundle.nix.nar.v1+zstd";

/// What is wrong with a Nix value. Values are shown with control characters
/// escaped and long ones shortened: they come from a bundle.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NixFormatError {
    /// Not Nix base-32 of the right length.
    #[error("`{0}` is not a Nix base-32 sha256 hash (52 characters of 0-9a-z without e, o, u, t)")]
    Nix32(String),
    /// A hash in none of the spellings Nix uses.
    #[error("`{0}` is not a sha256 hash as Nix writes it (`sha256:<nix32>`, `sha256:<hex>` or `sha256-<base64>`)")]
    Hash(String),
    /// Not a store path.
    #[error("`{0}` is not a Nix store path (`/nix/store/<32 base-32 characters>-<name>`)")]
    StorePath(String),
    /// Not a content address as Nix writes one.
    #[error("`{0}` is not a content address as Nix writes one (`fixed:r:sha256:<nix32>`, `fixed:sha256:<nix32>`, `text:sha256:<nix32>`)")]
    ContentAddress(String),
    /// Not a path signature as Nix writes one.
    #[error("`{0}` is not a path signature as Nix writes one (`<key name>:<base64 of 64 bytes>`)")]
    PathSignature(String),
    /// A narinfo field whose value is not of its grammar.
    #[error("narinfo field {field}: `{value}` is not a valid value; nothing was written")]
    NarInfoField {
        /// The field (`CA`, `Sig`, `URL`, `Compression`).
        field: &'static str,
        /// The value.
        value: String,
    },
    /// References that form a cycle (Nix closures have none but self-references).
    #[error("store paths reference each other in a cycle through `{0}`")]
    Cycle(String),
    /// A reference that is neither in the set nor known to exist elsewhere.
    #[error("`{path}` references `{reference}`, which is missing")]
    MissingReference {
        /// The path.
        path: String,
        /// Its missing reference.
        reference: String,
    },
}

impl crate::error::Classify for NixFormatError {
    /// Whoever parsed the field decides.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}

/// `s` as an error message may show it: see [`crate::text::shortened`] (at most
/// about 200 characters).
pub(crate) fn shown(s: &str) -> String {
    crate::text::shortened(s, 200)
}
