//! The protocol `nix-store --serve` speaks on its stdin and stdout (Nix's "serve
//! protocol", the one `nix copy --to ssh://` and Hydra use), for the two commands
//! the importer needs, as pure writers and readers.
//!
//! Why the importer speaks it: a closure of a NixOS system is 1,000 to 2,000 paths,
//! most of them a few KiB, so what a path costs beyond its bytes decides the import.
//! `nix copy` from a binary cache spends milliseconds on each (a narinfo request, a
//! NAR request, a row in its narinfo cache, a substitution goal); `nix-store
//! --import` adds one for a few hundred microseconds but registers no signature, so
//! the signatures had to be added afterwards from a folder of narinfo files, a
//! file per path (`nix store copy-sigs`), which cost more than the import. One
//! `nix-store --serve --write` does both at once: [`write_add_to_store_nar`] hands
//! Nix a path's whole registration (NAR hash, references, deriver, signatures,
//! content address) followed by its NAR, and Nix checks the NAR against that hash,
//! restores it and registers the path with its signatures in one step, exactly as
//! `nix copy` would have. [`write_query_path_infos`] asks, in the same protocol,
//! which paths are valid and with which NAR hash and signatures: one Nix process
//! instead of `nix-store --check-validity` and `nix path-info`.
//!
//! The framing is Nix's wire format, as in the NAR ([`super::nar`]): little-endian
//! u64 numbers, strings as a length, the bytes and zero padding to 8, a set as a
//! count and its strings. The fields and their order are those of `nix-store.cc`'s
//! `opServe` in Nix 2.8, the version the tests run; later versions are not tested
//! here (a field out of order fails loudly: Nix cannot parse a store path as a
//! hash, as a first draft of this module found). What is read
//! comes from the Nix the user runs, not from a bundle, but it is bounded all the
//! same: a string is at most [`MAX_STRING`] bytes and a set at most [`MAX_COUNT`]
//! entries, so a broken peer gives an error, not an allocation of its choosing.

use std::io::{self, Read, Write};

use super::nar::{write_str, write_u64};
use super::{NarHash, StorePath};

/// What a client says first.
pub const CLIENT_MAGIC: u64 = 0x390c_9deb;
/// What `nix-store --serve` answers.
pub const SERVER_MAGIC: u64 = 0x5452_eecb;
/// The version this client speaks, 2.5: path infos carry NAR hash, content address
/// and signatures (2.4), and `AddToStoreNar` exists (2.5; Nix 2.0 and later).
pub const VERSION: u64 = 0x205;
/// `QueryPathInfos`: a set of paths in, the valid ones' infos out.
const CMD_QUERY_PATH_INFOS: u64 = 2;
/// `AddToStoreNar`: a path's registration and its NAR in, `1` out.
const CMD_ADD_TO_STORE_NAR: u64 = 9;

/// The longest string read from Nix: a store path, a signature or a content
/// address is far shorter.
pub const MAX_STRING: u64 = 64 << 10;
/// The most entries read in one set (references, signatures).
pub const MAX_COUNT: u64 = 1 << 20;

/// What `nix-store --serve` sent that this client cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ServeProtoError {
    /// Reading from Nix failed or ended early.
    #[error("reading from nix-store --serve: {0}")]
    Io(#[from] io::Error),
    /// The first number is not the serve protocol's.
    #[error("nix-store --serve answered {0:#x}, not the serve protocol's {SERVER_MAGIC:#x}")]
    Magic(u64),
    /// A version without the commands used here.
    #[error("nix-store --serve speaks protocol {0}.{1}, older than 2.5 (Nix 2.0), which has no way to add a path with its signatures")]
    Version(u64, u64),
    /// A string or set longer than any Nix writes.
    #[error("nix-store --serve sent a {what} of {len}, more than the {max} allowed")]
    TooLong {
        /// What was being read.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// A field that does not parse.
    #[error("nix-store --serve sent a {what} that does not parse: {why}")]
    Field {
        /// What was being read.
        what: &'static str,
        /// Why it does not parse.
        why: String,
    },
    /// `AddToStoreNar` answered something other than success.
    #[error("nix-store --serve answered {0} instead of 1 after a path was added")]
    Ack(u64),
}

impl crate::error::Classify for ServeProtoError {
    /// Nix's own answers that cannot be used are any other error, like its output.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}

/// The client's greeting: the magic number and [`VERSION`].
pub fn write_hello<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    write_u64(w, CLIENT_MAGIC)?;
    write_u64(w, VERSION)
}

/// The server's greeting: its magic number and protocol version, which must be 2.5
/// or later. Returns the version.
pub fn read_hello<R: Read + ?Sized>(r: &mut R) -> Result<u64, ServeProtoError> {
    let magic = read_u64(r)?;
    if magic != SERVER_MAGIC {
        return Err(ServeProtoError::Magic(magic));
    }
    let version = read_u64(r)?;
    let (major, minor) = (version >> 8, version & 0xff);
    if major != 2 || minor < 5 {
        return Err(ServeProtoError::Version(major, minor));
    }
    Ok(version)
}

/// A path's registration, as `AddToStoreNar` carries it before the NAR.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    /// The path.
    pub path: &'a StorePath,
    /// Its deriver.
    pub deriver: Option<&'a StorePath>,
    /// The NAR's hash, which Nix checks the NAR against before it registers it.
    pub nar_hash: &'a NarHash,
    /// Its references.
    pub references: &'a [StorePath],
    /// The NAR's size: exactly this many NAR bytes follow the registration.
    pub nar_size: u64,
    /// Its signatures (`name:base64`).
    pub sigs: &'a [String],
    /// Its content address, if it has one.
    pub ca: Option<&'a str>,
}

/// `AddToStoreNar` and `reg`: the caller then writes exactly `reg.nar_size` bytes
/// of NAR, and Nix answers with [`read_ack`] once it registered the path. The
/// registration time is left to Nix (0: now), and the path is not "ultimate"
/// (built here): it was copied, as with `nix copy`.
pub fn write_add_to_store_nar<W: Write + ?Sized>(
    w: &mut W,
    reg: &Registration<'_>,
) -> io::Result<()> {
    write_u64(w, CMD_ADD_TO_STORE_NAR)?;
    write_str(w, reg.path.as_str().as_bytes())?;
    write_str(w, reg.deriver.map_or("", |d| d.as_str()).as_bytes())?;
    write_str(w, reg.nar_hash.to_nix32_string().as_bytes())?;
    write_u64(w, reg.references.len() as u64)?;
    for r in reg.references {
        write_str(w, r.as_str().as_bytes())?;
    }
    write_u64(w, 0)?; // registration time: now
    write_u64(w, reg.nar_size)?;
    write_u64(w, 0)?; // not ultimate
    write_u64(w, reg.sigs.len() as u64)?;
    for s in reg.sigs {
        write_str(w, s.as_bytes())?;
    }
    write_str(w, reg.ca.unwrap_or("").as_bytes())
}

/// Nix's answer to one `AddToStoreNar`: `1` once the path is registered.
pub fn read_ack<R: Read + ?Sized>(r: &mut R) -> Result<(), ServeProtoError> {
    match read_u64(r)? {
        1 => Ok(()),
        n => Err(ServeProtoError::Ack(n)),
    }
}

/// `QueryPathInfos` over `paths`; Nix answers with the valid ones
/// ([`read_path_infos`]).
pub fn write_query_path_infos<W: Write + ?Sized>(
    w: &mut W,
    paths: &[&StorePath],
) -> io::Result<()> {
    write_u64(w, CMD_QUERY_PATH_INFOS)?;
    write_u64(w, paths.len() as u64)?;
    for p in paths {
        write_str(w, p.as_str().as_bytes())?;
    }
    Ok(())
}

/// What Nix holds for one valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPath {
    /// The path.
    pub path: StorePath,
    /// Its NAR hash.
    pub nar_hash: NarHash,
    /// Its NAR size.
    pub nar_size: u64,
    /// Its signatures.
    pub sigs: Vec<String>,
}

/// The answer to [`write_query_path_infos`]: one entry per valid path (an invalid
/// one is left out), ended by an empty path.
pub fn read_path_infos<R: Read + ?Sized>(r: &mut R) -> Result<Vec<HeldPath>, ServeProtoError> {
    let mut out = Vec::new();
    loop {
        let path = read_string(r, "store path")?;
        if path.is_empty() {
            return Ok(out);
        }
        let path = StorePath::parse(&path).map_err(|e| field("store path", e))?;
        let _deriver = read_string(r, "deriver")?;
        let refs = read_count(r, "reference set")?;
        for _ in 0..refs {
            read_string(r, "reference")?;
        }
        let _download_size = read_u64(r)?;
        let nar_size = read_u64(r)?;
        let nar_hash = read_string(r, "NAR hash")?;
        let nar_hash = NarHash::parse(&nar_hash).map_err(|e| field("NAR hash", e))?;
        let _ca = read_string(r, "content address")?;
        let n = read_count(r, "signature set")?;
        let mut sigs = Vec::with_capacity(n as usize);
        for _ in 0..n {
            sigs.push(read_string(r, "signature")?);
        }
        out.push(HeldPath {
            path,
            nar_hash,
            nar_size,
            sigs,
        });
    }
}

fn field(what: &'static str, e: impl std::fmt::Display) -> ServeProtoError {
    ServeProtoError::Field {
        what,
        why: e.to_string(),
    }
}

fn read_u64<R: Read + ?Sized>(r: &mut R) -> Result<u64, ServeProtoError> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_count<R: Read + ?Sized>(r: &mut R, what: &'static str) -> Result<u64, ServeProtoError> {
    let n = read_u64(r)?;
    if n > MAX_COUNT {
        return Err(ServeProtoError::TooLong {
            what,
            len: n,
            max: MAX_COUNT,
        });
    }
    Ok(n)
}

fn read_string<R: Read + ?Sized>(r: &mut R, what: &'static str) -> Result<String, ServeProtoError> {
    let len = read_u64(r)?;
    if len > MAX_STRING {
        return Err(ServeProtoError::TooLong {
            what,
            len,
            max: MAX_STRING,
        });
    }
    let padded = len + super::nar::padding(len) as u64;
    let mut b = vec![0u8; padded as usize];
    r.read_exact(&mut b)?;
    if b[len as usize..].iter().any(|&x| x != 0) {
        return Err(field(what, "its padding is not zero"));
    }
    b.truncate(len as usize);
    String::from_utf8(b).map_err(|e| field(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/nix/store/0031j8yfy1n9z5sd85hdj58vz6a6v5bg-scale-leaf-00381";
    const DRV: &str = "/nix/store/xkr186i0vmly8fzxhv7bgskskwrv2nlb-scale-leaf-00381.drv";
    const HASH: &str = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";

    fn str_bytes(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v.resize(v.len() + super::super::nar::padding(s.len() as u64), 0);
        v
    }

    #[test]
    fn hello_is_the_magic_and_version_2_5() {
        let mut out = Vec::new();
        write_hello(&mut out).unwrap();
        assert_eq!(
            out,
            [0xeb, 0x9d, 0x0c, 0x39, 0, 0, 0, 0, 5, 2, 0, 0, 0, 0, 0, 0]
        );
        let mut answer = SERVER_MAGIC.to_le_bytes().to_vec();
        answer.extend_from_slice(&0x207u64.to_le_bytes());
        assert_eq!(read_hello(&mut &answer[..]).unwrap(), 0x207);
    }

    #[test]
    fn an_old_or_foreign_server_is_refused() {
        let mut old = SERVER_MAGIC.to_le_bytes().to_vec();
        old.extend_from_slice(&0x204u64.to_le_bytes());
        assert!(matches!(
            read_hello(&mut &old[..]),
            Err(ServeProtoError::Version(2, 4))
        ));
        let foreign = 0x6e697863u64.to_le_bytes();
        assert!(matches!(
            read_hello(&mut &foreign[..]),
            Err(ServeProtoError::Magic(0x6e697863))
        ));
        assert!(matches!(
            read_hello(&mut &[0u8; 3][..]),
            Err(ServeProtoError::Io(_))
        ));
    }

    /// The field order of Nix 2.8's `opServe` for `cmdAddToStoreNar`: path,
    /// deriver, NAR hash, references, registration time, NAR size, ultimate,
    /// signatures, content address.
    #[test]
    fn add_to_store_nar_writes_the_fields_in_nix_order() {
        let path = StorePath::parse(PATH).unwrap();
        let drv = StorePath::parse(DRV).unwrap();
        let hash = NarHash::parse(HASH).unwrap();
        let sigs = vec!["k:c2ln".to_string()];
        let mut out = Vec::new();
        write_add_to_store_nar(
            &mut out,
            &Registration {
                path: &path,
                deriver: Some(&drv),
                nar_hash: &hash,
                references: std::slice::from_ref(&path),
                nar_size: 120,
                sigs: &sigs,
                ca: None,
            },
        )
        .unwrap();
        let mut want = 9u64.to_le_bytes().to_vec();
        want.extend(str_bytes(PATH));
        want.extend(str_bytes(DRV));
        want.extend(str_bytes(HASH));
        want.extend(1u64.to_le_bytes());
        want.extend(str_bytes(PATH));
        want.extend(0u64.to_le_bytes());
        want.extend(120u64.to_le_bytes());
        want.extend(0u64.to_le_bytes());
        want.extend(1u64.to_le_bytes());
        want.extend(str_bytes("k:c2ln"));
        want.extend(str_bytes(""));
        assert_eq!(out, want);
        assert!(read_ack(&mut &1u64.to_le_bytes()[..]).is_ok());
        assert!(matches!(
            read_ack(&mut &0u64.to_le_bytes()[..]),
            Err(ServeProtoError::Ack(0))
        ));
    }

    #[test]
    fn path_infos_are_read_until_the_empty_path() {
        let path = StorePath::parse(PATH).unwrap();
        let mut query = Vec::new();
        write_query_path_infos(&mut query, &[&path]).unwrap();
        let mut want = 2u64.to_le_bytes().to_vec();
        want.extend(1u64.to_le_bytes());
        want.extend(str_bytes(PATH));
        assert_eq!(query, want);

        let mut answer = str_bytes(PATH);
        answer.extend(str_bytes(DRV));
        answer.extend(1u64.to_le_bytes());
        answer.extend(str_bytes(PATH));
        answer.extend(120u64.to_le_bytes());
        answer.extend(120u64.to_le_bytes());
        answer.extend(str_bytes(HASH));
        answer.extend(str_bytes(""));
        answer.extend(2u64.to_le_bytes());
        answer.extend(str_bytes("a:c2ln"));
        answer.extend(str_bytes("b:c2ln"));
        answer.extend(str_bytes(""));
        let got = read_path_infos(&mut &answer[..]).unwrap();
        assert_eq!(
            got,
            vec![HeldPath {
                path,
                nar_hash: NarHash::parse(HASH).unwrap(),
                nar_size: 120,
                sigs: vec!["a:c2ln".into(), "b:c2ln".into()],
            }]
        );
        assert!(read_path_infos(&mut &str_bytes("")[..]).unwrap().is_empty());
    }

    #[test]
    fn a_broken_answer_is_an_error_not_an_allocation() {
        let huge = (MAX_STRING + 1).to_le_bytes();
        assert!(matches!(
            read_path_infos(&mut &huge[..]),
            Err(ServeProtoError::TooLong { len, .. }) if len == MAX_STRING + 1
        ));
        let mut bad_pad = 1u64.to_le_bytes().to_vec();
        bad_pad.extend_from_slice(b"x\x01\0\0\0\0\0\0");
        assert!(matches!(
            read_path_infos(&mut &bad_pad[..]),
            Err(ServeProtoError::Field { .. })
        ));
        let mut not_a_path = str_bytes("/etc/passwd");
        not_a_path.extend(str_bytes(""));
        assert!(matches!(
            read_path_infos(&mut &not_a_path[..]),
            Err(ServeProtoError::Field {
                what: "store path",
                ..
            })
        ));
        let cut = &str_bytes(PATH)[..20];
        assert!(matches!(
            read_path_infos(&mut &cut[..]),
            Err(ServeProtoError::Io(_))
        ));
    }
}
