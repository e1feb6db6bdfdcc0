//! Byte-reproducible chart archives.
//!
//! `helm package` stamps every tar entry with the current time, so packaging the same
//! chart twice gives two different archives, and a `HelmChart` resource holding one
//! would break the rule that the same inputs give the same bundle. The resolver
//! therefore unpacks what `helm package` wrote (Helm decides which files belong to
//! the chart, `.helmignore` included) and rewrites it here with fixed metadata: mtime
//! 0, owner 0:0, mode 0644 or 0755, entries in Helm's order. The gzip wrapper uses
//! deflate's *stored* blocks, which every gzip reader accepts and which depend on no
//! compressor version; the bundle compresses large documents with zstd anyway.

use std::io::Read;

use super::K8sError;

/// Rewrites the tar stream `tar` with fixed metadata and returns it gzip-wrapped.
pub fn normalize_chart_tar(tar: &[u8]) -> Result<Vec<u8>, K8sError> {
    let err = |e: std::io::Error| K8sError::Archive(e.to_string());
    let mut out = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(K8sError::Archive(format!(
                "entry {} is a {:?}, not a file or directory",
                String::from_utf8_lossy(&entry.path_bytes()),
                kind
            )));
        }
        let path = entry.path_bytes().into_owned();
        let exec = entry.header().mode().map_err(err)? & 0o111 != 0;
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(err)?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind.is_dir() || exec { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        let path = String::from_utf8(path)
            .map_err(|_| K8sError::Archive("an entry's path is not UTF-8".into()))?;
        out.append_data(&mut h, &path, data.as_slice())
            .map_err(err)?;
    }
    let tar = out.into_inner().map_err(err)?;
    Ok(gzip_stored(&tar))
}

/// A gzip member holding `data` in deflate stored blocks (RFC 1951 3.2.4, RFC 1952),
/// with no file name and mtime 0.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 32);
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=255 (unknown).
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = c.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3), as gzip uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut crc = !0u32;
    for b in data {
        crc = table[((crc ^ u32::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn stored_gzip_framing() {
        // Framing checks: header, one final block per 64 KiB, trailer.
        let g = gzip_stored(b"hello");
        assert_eq!(&g[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(g[10], 1, "single final block");
        assert_eq!(&g[11..15], &[5, 0, 0xfa, 0xff]);
        assert_eq!(&g[15..20], b"hello");
        assert_eq!(g.len(), 10 + 5 + 5 + 8);
        let big = gzip_stored(&vec![7u8; 70000]);
        assert_eq!(big.len(), 10 + 5 * 2 + 70000 + 8);
        assert_eq!(gzip_stored(b"").len(), 10 + 5 + 8);
    }

    #[test]
    fn normalizing_drops_times_and_owners() {
        let mut b = tar::Builder::new(Vec::new());
        for (path, mtime, mode) in [("web/Chart.yaml", 12345, 0o600), ("web/run.sh", 99, 0o700)] {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(mtime);
            h.set_mode(mode);
            h.set_uid(1000);
            h.set_size(3);
            b.append_data(&mut h, path, &b"abc"[..]).unwrap();
        }
        let a = b.into_inner().unwrap();
        let n = normalize_chart_tar(&a).unwrap();
        // Stored deflate: the tar is inside verbatim, right after the block header.
        let tar = &n[15..n.len() - 8];
        let mut ar = tar::Archive::new(tar);
        let got: Vec<(String, u64, u32, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mtime().unwrap(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("web/Chart.yaml".to_string(), 0, 0o644, 0),
                ("web/run.sh".to_string(), 0, 0o755, 0)
            ]
        );
    }
}
