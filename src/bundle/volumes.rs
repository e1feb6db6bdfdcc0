//! Split volumes and parity volumes (format.md section 11), pure.
//!
//! Field media have limits a bundle does not: FAT32 takes no file of 4 GiB or more, a
//! courier carries several disks, and one of them may arrive broken. A bundle is
//! therefore cut into *data volumes* that are nothing but consecutive byte ranges of
//! it, so that the head, the signature and every offset stay exactly those of the
//! whole file, and `cat` joins them. Optional *parity volumes* carry Reed–Solomon
//! parity over the data volumes, so that any of them, up to the number of parity
//! volumes, can be rebuilt.
//!
//! This module holds what a second implementation needs to agree on byte for byte:
//! the names, the layout arithmetic, the parity header and the code. Reading and
//! writing files is in [`crate::io::volumes`].
//!
//! The code works byte by byte: parity byte `o` of a parity volume depends only on
//! byte `o` of each data volume. How many bytes are processed at a time (the stripe)
//! is therefore a memory choice of the implementation and not part of the format.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use reed_solomon_erasure::galois_8::ReedSolomon;
use serde::{Deserialize, Serialize};

use super::canonical;
use super::digest::Digest;
use super::layout::HEADER_LEN;

/// The most data volumes a set may have: their numbers have three digits.
pub const MAX_DATA_VOLUMES: u32 = 999;
/// The most parity volumes a set may have: their numbers have two digits.
pub const MAX_PARITY_VOLUMES: u32 = 99;
/// The most data and parity volumes together that the code supports (GF(2^8)).
pub const MAX_SHARDS: u32 = 256;
/// The largest file FAT32 stores: 4 GiB less one byte (`--volume-size fat32`).
pub const FAT32_MAX: u64 = (4 << 30) - 1;
/// The first 16 bytes of every parity volume.
pub const PARITY_MAGIC: &[u8; 16] = b"gapbundle-parity";
/// Parity volume headers are padded to a multiple of this.
pub const PARITY_ALIGN: u64 = 4096;
/// The name of the code in the parity header (format.md 11.4).
pub const CODE_NAME: &str = "reed-solomon-gf256-vandermonde";
/// The parity header version this module writes and reads.
pub const PARITY_VERSION: u32 = 1;
/// The longest JSON a parity header may have: 256 volume digests fit many times over.
const MAX_HEADER_JSON: u32 = 1 << 20;

/// Why a volume size, a volume set or a parity header is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The text is not a size.
    #[error("`{0}` is not a volume size: give bytes (`4294967295`), a size with K, M, G or T (`700M`, `4G`; powers of 1024, KB/MB/GB/TB for powers of 1000) or `fat32` (4 GiB - 1)")]
    BadSize(String),
    /// The volume size leaves no room for the head in the first volume.
    #[error("a volume size of {volume_size} bytes is too small for this bundle: the first volume must hold its head, so the volumes must be at least {minimum} bytes")]
    TooSmall {
        /// The size asked for.
        volume_size: u64,
        /// The smallest size accepted.
        minimum: u64,
    },
    /// The bundle would need more volumes than names allow.
    #[error("{bundle_size} bytes in volumes of {volume_size} bytes make {count} volumes, more than the {max} a set may have: choose a volume size of at least {minimum} bytes")]
    TooMany {
        /// Bundle length.
        bundle_size: u64,
        /// The size asked for.
        volume_size: u64,
        /// Volumes it would make.
        count: u64,
        /// The limit.
        max: u32,
        /// The smallest volume size that stays within the limit.
        minimum: u64,
    },
    /// The number of parity volumes is out of range.
    #[error("{parity} parity volumes for {data} data volumes: the code allows 1 to {max_parity} parity volumes and at most {max_shards} volumes in all; choose fewer parity volumes or a larger volume size")]
    BadParity {
        /// Data volumes.
        data: u32,
        /// Parity volumes asked for.
        parity: u32,
        /// Limit of parity volumes.
        max_parity: u32,
        /// Limit of all volumes.
        max_shards: u32,
    },
    /// A parity volume's header is not one this version reads.
    #[error("not a usable parity volume header: {0}")]
    Header(String),
    /// The code could not rebuild the missing volumes.
    #[error("the parity cannot rebuild the missing volumes: {0}")]
    Rebuild(String),
}

impl crate::error::Classify for VolumeError {
    /// A volume size or parity count the user gave is bad input; a parity header
    /// that cannot be read is a damaged volume set (verification); a code that
    /// cannot rebuild what it was given is any other error.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        use crate::error::ErrorClass;
        Some(match self {
            VolumeError::BadSize(_)
            | VolumeError::TooSmall { .. }
            | VolumeError::TooMany { .. }
            | VolumeError::BadParity { .. } => ErrorClass::Input,
            VolumeError::Header(_) => ErrorClass::Verify,
            VolumeError::Rebuild(_) => ErrorClass::Other,
        })
    }
}

/// Parses a volume size: bytes, a number with `K`, `M`, `G`, `T` (powers of 1024,
/// also written `KiB`…) or `KB`, `MB`, `GB`, `TB` (powers of 1000), or `fat32`.
pub fn parse_size(s: &str) -> Result<u64, VolumeError> {
    let bad = || VolumeError::BadSize(s.to_string());
    let t = s.trim();
    if t.eq_ignore_ascii_case("fat32") {
        return Ok(FAT32_MAX);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        "T" | "TIB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    match n.checked_mul(mult) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(bad()),
    }
}

/// How a bundle of `bundle_size` bytes is cut into volumes of `volume_size` bytes:
/// volume `i` (from 0) holds bytes `[i * volume_size, min((i + 1) * volume_size,
/// bundle_size))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Length of the whole bundle.
    pub bundle_size: u64,
    /// Length of every volume but the last, which may be shorter.
    pub volume_size: u64,
}

impl Layout {
    /// The layout for a bundle whose head (manifest and signatures) ends at
    /// `data_start`, checked against the limits of section 11.
    pub fn new(bundle_size: u64, volume_size: u64, data_start: u64) -> Result<Layout, VolumeError> {
        let minimum = Layout::minimum_volume_size(data_start);
        if volume_size < minimum {
            return Err(VolumeError::TooSmall {
                volume_size,
                minimum,
            });
        }
        let layout = Layout {
            bundle_size,
            volume_size,
        };
        let count = bundle_size.div_ceil(volume_size).max(1);
        if count > u64::from(MAX_DATA_VOLUMES) {
            return Err(VolumeError::TooMany {
                bundle_size,
                volume_size,
                count,
                max: MAX_DATA_VOLUMES,
                minimum: bundle_size.div_ceil(u64::from(MAX_DATA_VOLUMES)),
            });
        }
        Ok(layout)
    }

    /// The smallest volume size gapbundle writes for a bundle whose head ends at
    /// `data_start`: the head and the tar header of the first data entry, so that
    /// the first volume alone shows where the data section starts.
    pub fn minimum_volume_size(data_start: u64) -> u64 {
        data_start + HEADER_LEN
    }

    /// Number of data volumes (at least 1).
    pub fn count(&self) -> u32 {
        self.bundle_size.div_ceil(self.volume_size).max(1) as u32
    }

    /// Start and length of volume `i` (from 0) in the bundle.
    pub fn range(&self, i: u32) -> (u64, u64) {
        let start = u64::from(i) * self.volume_size;
        let len = self.volume_size.min(self.bundle_size.saturating_sub(start));
        (start, len)
    }

    /// Length of each parity volume's payload: that of the first (longest) volume.
    pub fn parity_len(&self) -> u64 {
        self.range(0).1
    }
}

/// Which volume of a set a file is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeName {
    /// Data volume `n` (1-based): `PREFIX.001` …
    Data(u32),
    /// Parity volume `n` (1-based): `PREFIX.p01` …
    Parity(u32),
}

/// `PREFIX.001`, `PREFIX.002`, …: data volume `n`, counted from 1.
pub fn data_volume_path(prefix: &Path, n: u32) -> PathBuf {
    suffixed(prefix, &format!("{n:03}"))
}

/// `PREFIX.p01`, `PREFIX.p02`, …: parity volume `n`, counted from 1.
pub fn parity_volume_path(prefix: &Path, n: u32) -> PathBuf {
    suffixed(prefix, &format!("p{n:02}"))
}

fn suffixed(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// The prefix and the volume a path names, if its name ends in `.NNN` (three
/// digits, not `000`) or `.pNN` (two digits, not `00`).
pub fn parse_volume_path(path: &Path) -> Option<(PathBuf, VolumeName)> {
    let name = path.file_name()?.to_str()?;
    let (stem, suffix) = name.rsplit_once('.')?;
    if stem.is_empty() {
        return None;
    }
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let which = match suffix.strip_prefix('p') {
        Some(d) if d.len() == 2 && all_digits(d) => VolumeName::Parity(d.parse().ok()?),
        None if suffix.len() == 3 && all_digits(suffix) => VolumeName::Data(suffix.parse().ok()?),
        _ => return None,
    };
    if matches!(which, VolumeName::Data(0) | VolumeName::Parity(0)) {
        return None;
    }
    Some((path.with_file_name(stem), which))
}

/// The header at the start of every parity volume (format.md 11.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParityHeader {
    /// Header version, 1.
    pub version: u32,
    /// The code, [`CODE_NAME`].
    pub code: String,
    /// The bundle digest (sha256 of its manifest).
    pub bundle_digest: Digest,
    /// Length of the whole bundle.
    pub bundle_size: u64,
    /// Length of every data volume but the last.
    pub volume_size: u64,
    /// Number of data volumes.
    pub data_volumes: u32,
    /// Number of parity volumes.
    pub parity_volumes: u32,
    /// Which parity volume this is, from 1.
    pub index: u32,
    /// sha256 of each data volume's bytes, in order.
    pub data: Vec<Digest>,
    /// sha256 of each parity volume's payload (the bytes after its header), in order.
    pub parity: Vec<Digest>,
}

impl ParityHeader {
    /// The layout the header describes.
    pub fn layout(&self) -> Layout {
        Layout {
            bundle_size: self.bundle_size,
            volume_size: self.volume_size,
        }
    }

    /// The same set as `other` (everything but `index` equal).
    pub fn same_set(&self, other: &ParityHeader) -> bool {
        ParityHeader {
            index: other.index,
            ..self.clone()
        } == *other
    }

    /// The header's bytes: magic, JSON length, canonical JSON, the sha256 of what
    /// precedes it, zeros up to a multiple of [`PARITY_ALIGN`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let json = canonical::to_vec(self).expect("a parity header is canonical JSON");
        let mut out = Vec::with_capacity(json.len() + 4096);
        out.extend_from_slice(PARITY_MAGIC);
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        let check = Digest::of(&out);
        out.extend_from_slice(check.as_bytes());
        out.resize(header_len(json.len() as u64) as usize, 0);
        out
    }

    /// Reads and checks a header from the start of a parity volume; returns it and
    /// its length in bytes (where the payload starts).
    pub fn read_from<R: Read>(r: &mut R) -> Result<(ParityHeader, u64), VolumeError> {
        let bad = |s: String| VolumeError::Header(s);
        let io_err = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => bad("the file ends inside its header".into()),
            _ => bad(e.to_string()),
        };
        let mut start = [0u8; 20];
        r.read_exact(&mut start).map_err(io_err)?;
        if &start[..16] != PARITY_MAGIC {
            return Err(bad("it does not start with `gapbundle-parity`".into()));
        }
        let json_len = u32::from_be_bytes([start[16], start[17], start[18], start[19]]);
        if json_len > MAX_HEADER_JSON {
            return Err(bad(format!(
                "its header claims {json_len} bytes, more than the {MAX_HEADER_JSON} a reader accepts"
            )));
        }
        let total = header_len(u64::from(json_len));
        let mut rest = vec![0u8; total as usize - 20];
        r.read_exact(&mut rest).map_err(io_err)?;
        let json = &rest[..json_len as usize];
        let check = &rest[json_len as usize..json_len as usize + 32];
        let mut covered = start.to_vec();
        covered.extend_from_slice(json);
        if Digest::of(&covered).as_bytes() != check {
            return Err(bad(
                "its header's checksum does not match: the header is damaged".into(),
            ));
        }
        if rest[json_len as usize + 32..].iter().any(|&b| b != 0) {
            return Err(bad("non-zero bytes in the header's padding".into()));
        }
        let h: ParityHeader = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
        h.validate()?;
        Ok((h, total))
    }

    /// The rules of format.md 11.3 that hold between the fields.
    pub fn validate(&self) -> Result<(), VolumeError> {
        let bad = |s: String| Err(VolumeError::Header(s));
        if self.version != PARITY_VERSION {
            return bad(format!(
                "version {} (this gapbundle reads version {PARITY_VERSION})",
                self.version
            ));
        }
        if self.code != CODE_NAME {
            return bad(format!("unknown code `{}`", self.code));
        }
        if self.bundle_size == 0 || self.volume_size == 0 {
            return bad("a bundle and its volumes have at least one byte".into());
        }
        let count = self.bundle_size.div_ceil(self.volume_size);
        if count != u64::from(self.data_volumes) {
            return bad(format!(
                "{} data volumes, but {} bytes in volumes of {} make {count}",
                self.data_volumes, self.bundle_size, self.volume_size
            ));
        }
        check_parity_count(self.data_volumes, self.parity_volumes)?;
        if self.index == 0 || self.index > self.parity_volumes {
            return bad(format!(
                "index {} of {} parity volumes",
                self.index, self.parity_volumes
            ));
        }
        if self.data.len() != self.data_volumes as usize
            || self.parity.len() != self.parity_volumes as usize
        {
            return bad("the lists of volume digests do not match the counts".into());
        }
        Ok(())
    }
}

/// Length of a parity header whose JSON has `json_len` bytes.
fn header_len(json_len: u64) -> u64 {
    (16 + 4 + json_len + 32).div_ceil(PARITY_ALIGN) * PARITY_ALIGN
}

/// Checks that `parity` parity volumes over `data` data volumes are within the limits.
pub fn check_parity_count(data: u32, parity: u32) -> Result<(), VolumeError> {
    if parity == 0 || parity > MAX_PARITY_VOLUMES || data + parity > MAX_SHARDS {
        return Err(VolumeError::BadParity {
            data,
            parity,
            max_parity: MAX_PARITY_VOLUMES,
            max_shards: MAX_SHARDS,
        });
    }
    Ok(())
}

/// The Reed–Solomon code of format.md 11.4 for `data` data and `parity` parity
/// volumes.
pub struct ParityCode {
    rs: ReedSolomon,
}

impl ParityCode {
    /// The code for these counts.
    pub fn new(data: u32, parity: u32) -> Result<ParityCode, VolumeError> {
        check_parity_count(data, parity)?;
        let rs = ReedSolomon::new(data as usize, parity as usize)
            .map_err(|e| VolumeError::Rebuild(format!("{e:?}")))?;
        Ok(ParityCode { rs })
    }

    /// Computes the parity shards of one stripe: every slice has the same length;
    /// data volumes shorter than the stripe are passed zero-padded.
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), VolumeError> {
        self.rs
            .encode_sep(data, parity)
            .map_err(|e| VolumeError::Rebuild(format!("{e:?}")))
    }

    /// Fills in the missing data shards of one stripe (`None`) from the others and
    /// the parity shards (data shards first, then parity, each `None` when missing
    /// or not to be used). Needs as many parity shards present as data shards are
    /// missing.
    pub fn rebuild(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), VolumeError> {
        self.rs
            .reconstruct_data(shards)
            .map_err(|e| VolumeError::Rebuild(format!("{e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("fat32").unwrap(), 4294967295);
        assert_eq!(parse_size("FAT32").unwrap(), FAT32_MAX);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("700M").unwrap(), 700 << 20);
        assert_eq!(parse_size("700MB").unwrap(), 700_000_000);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("5000").unwrap(), 5000);
        for bad in ["", "0", "4Q", "G", "-1", "1.5G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layout_and_limits() {
        let l = Layout::new(12288, 5000, 4096).unwrap();
        assert_eq!(l.count(), 3);
        assert_eq!(l.range(0), (0, 5000));
        assert_eq!(l.range(2), (10000, 2288));
        assert_eq!(l.parity_len(), 5000);
        let one = Layout::new(12288, 1 << 30, 4096).unwrap();
        assert_eq!((one.count(), one.parity_len()), (1, 12288));
        let e = Layout::new(12288, 4600, 4096).unwrap_err();
        assert!(e.to_string().contains("at least 4608 bytes"), "{e}");
        let e = Layout::new(10 << 30, 8 << 20, 4096).unwrap_err();
        assert!(matches!(e, VolumeError::TooMany { count: 1280, .. }), "{e}");
        assert!(check_parity_count(255, 1).is_ok());
        assert!(check_parity_count(255, 2).is_err());
        assert!(check_parity_count(3, 0).is_err());
        assert!(check_parity_count(3, 100).is_err());
    }

    #[test]
    fn names() {
        let p = Path::new("/media/usb/site.gapb");
        assert_eq!(
            data_volume_path(p, 1),
            Path::new("/media/usb/site.gapb.001")
        );
        assert_eq!(
            parity_volume_path(p, 2),
            Path::new("/media/usb/site.gapb.p02")
        );
        assert_eq!(
            parse_volume_path(Path::new("/media/usb/site.gapb.012")),
            Some((p.to_path_buf(), VolumeName::Data(12)))
        );
        assert_eq!(
            parse_volume_path(Path::new("site.gapb.p07")),
            Some((PathBuf::from("site.gapb"), VolumeName::Parity(7)))
        );
        for no in [
            "site.gapb",
            "site.000",
            "site.p00",
            "site.01",
            "site.1234",
            ".001",
            "s.p1",
        ] {
            assert_eq!(parse_volume_path(Path::new(no)), None, "{no}");
        }
    }

    fn header() -> ParityHeader {
        ParityHeader {
            version: 1,
            code: CODE_NAME.into(),
            bundle_digest: Digest::of(b"manifest"),
            bundle_size: 12288,
            volume_size: 5000,
            data_volumes: 3,
            parity_volumes: 2,
            index: 1,
            data: vec![Digest::of(b"1"), Digest::of(b"2"), Digest::of(b"3")],
            parity: vec![Digest::of(b"p1"), Digest::of(b"p2")],
        }
    }

    #[test]
    fn a_header_round_trips_and_damage_is_refused() {
        let h = header();
        let bytes = h.to_bytes();
        assert_eq!(bytes.len(), 4096);
        let (back, len) = ParityHeader::read_from(&mut bytes.as_slice()).unwrap();
        assert_eq!((back, len), (h.clone(), 4096));
        for at in [0, 17, 40, 20 + 200, 4000] {
            let mut b = bytes.clone();
            b[at] ^= 1;
            assert!(
                ParityHeader::read_from(&mut b.as_slice()).is_err(),
                "byte {at}"
            );
        }
        let e = ParityHeader::read_from(&mut &bytes[..100]).unwrap_err();
        assert!(e.to_string().contains("ends inside"), "{e}");
        let mut wrong = h.clone();
        wrong.data_volumes = 4;
        let e = ParityHeader::read_from(&mut wrong.to_bytes().as_slice()).unwrap_err();
        assert!(e.to_string().contains("make 3"), "{e}");
        let mut other = h.clone();
        other.index = 2;
        assert!(h.same_set(&other));
        other.data[0] = Digest::of(b"x");
        assert!(!h.same_set(&other));
    }

    #[test]
    fn any_two_of_five_shards_can_be_lost() {
        let code = ParityCode::new(3, 2).unwrap();
        let data: Vec<Vec<u8>> = (0..3u8)
            .map(|i| (0..100u8).map(|x| x.wrapping_mul(7) ^ i).collect())
            .collect();
        let mut parity = vec![vec![0u8; 100]; 2];
        {
            let d: Vec<&[u8]> = data.iter().map(|v| v.as_slice()).collect();
            let mut p: Vec<&mut [u8]> = parity.iter_mut().map(|v| v.as_mut_slice()).collect();
            code.encode(&d, &mut p).unwrap();
        }
        let all: Vec<Vec<u8>> = data.iter().chain(&parity).cloned().collect();
        for a in 0..3 {
            for b in a + 1..5 {
                let mut shards: Vec<Option<Vec<u8>>> = all.iter().cloned().map(Some).collect();
                shards[a] = None;
                shards[b] = None;
                code.rebuild(&mut shards).unwrap();
                for (i, d) in data.iter().enumerate() {
                    assert_eq!(shards[i].as_ref().unwrap(), d, "lost {a} and {b}");
                }
            }
        }
    }
}
