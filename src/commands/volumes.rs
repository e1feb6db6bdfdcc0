//! `gapbundle split` and `gapbundle join`: a bundle to volumes and back.
//!
//! Both stream in constant memory. `split` checks every digest while it cuts (a
//! bundle damaged before it is split would otherwise get parity over its damage,
//! which no later check could tell from the truth), but not the signature: that is
//! for whoever receives the volumes. `join` copies the volumes to a temporary file
//! (a missing volume rebuilt from parity on the way), then verifies the copy from the
//! page cache, hashing blobs in parallel; a blob found damaged there sends the
//! volumes holding it to be checked against the parity header's digests, and a
//! damaged one is rebuilt and its bytes copied again. Every volume rebuilt is named;
//! the file is renamed into place only once every digest matched.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::report::{JoinReport, SplitReport};
use super::settings::{JoinSettings, SplitSettings};
use super::{print_json, Failure};
use crate::bundle::reader::{
    read_head, verify_parallel, verify_stream, NoSink, RangeReader, ReadAt, Reread,
};
use crate::bundle::volumes::Layout;
use crate::cli::{JoinArgs, OutputArgs, SplitArgs};
use crate::error::InputFailure;
use crate::io::atomic::AtomicFile;
use crate::io::source::BundleSource;
use crate::io::volumes::{Committed, VolumeOutput};
use crate::progress::{human_bytes, Progress};

/// Runs split.
pub fn split(a: SplitArgs, out: &OutputArgs) -> Result<(), Failure> {
    let a = SplitSettings::resolve(a)?;
    let progress = Progress::new(out.quiet || out.json);
    let prefix = a.prefix.clone();
    let source = BundleSource::open(&a.bundle)?;
    source.report_to(&progress);
    if let Some(src) = source.shared() {
        refuse_overwrite(src.paths(), &prefix, a.parity)?;
    }
    let mut r = source.reader()?;
    let mut recording = Recording {
        inner: &mut r,
        bytes: Vec::new(),
    };
    let head = read_head(&mut recording)?;
    let head_bytes = recording.bytes;
    let layout = Layout::new(head.file_len(), a.volume_size, head.data_start)?;
    let volumes = VolumeOutput::create(&prefix, layout, a.parity)?;
    let bar = progress.bar(
        format!("volumes {}", prefix.display()),
        head.manifest.data_len(),
    );
    {
        let mut w = volumes.writer();
        w.write_all(&head_bytes)
            .map_err(|e| io::Error::new(e.kind(), format!("writing the volumes: {e}")))?;
        let mut tee = Tee {
            inner: &mut r,
            out: &mut w,
        };
        verify_stream(&mut tee, &head, &mut NoSink, |n| bar.inc(n))?;
        w.finish()?;
    }
    bar.clear();
    let committed = commit(volumes, head.digest, layout.bundle_size, &progress)?;
    report_volumes(out, &prefix, &head.digest.to_string(), layout, &committed);
    Ok(())
}

/// Makes the parity and renames every volume into place, with a bar for the parity.
pub(super) fn commit(
    volumes: VolumeOutput,
    digest: crate::bundle::Digest,
    total: u64,
    progress: &Progress,
) -> Result<Committed, Failure> {
    let bar = progress.bar("parity", total);
    let committed = volumes.commit(digest, &|n| bar.inc(n))?;
    bar.clear();
    Ok(committed)
}

/// What create and split wrote, on stdout (create adds its own lines before).
pub(super) fn report_volumes(
    out: &OutputArgs,
    prefix: &Path,
    digest: &str,
    layout: Layout,
    c: &Committed,
) {
    if out.json {
        print_json(&SplitReport {
            ok: true,
            prefix: prefix.to_path_buf(),
            digest: digest.to_string(),
            size: layout.bundle_size,
            volume_size: layout.volume_size,
            volumes: c.data.clone(),
            parity_volumes: c.parity.clone(),
            removed: c.removed.clone(),
        });
    } else if !out.quiet {
        say_volumes(prefix, layout, c);
        say!("digest {digest}");
    }
}

/// The lines that name the volumes written.
pub(super) fn say_volumes(prefix: &Path, layout: Layout, c: &Committed) {
    say!(
        "wrote {} ({}) as {} volume(s) of at most {}: {}",
        prefix.display(),
        human_bytes(layout.bundle_size),
        c.data.len(),
        human_bytes(layout.volume_size),
        span(&c.data)
    );
    if !c.parity.is_empty() {
        say!(
            "  and {} parity volume(s): {} (any {} lost or damaged volumes can be rebuilt)",
            c.parity.len(),
            span(&c.parity),
            c.parity.len()
        );
    }
    for r in &c.removed {
        say!("  removed {} (left from an earlier set)", r.display());
    }
}

fn span(paths: &[PathBuf]) -> String {
    match paths {
        [] => String::new(),
        [one] => one.display().to_string(),
        [first, .., last] => format!("{} … {}", first.display(), last.display()),
    }
}

/// Splitting the volumes of a set into volumes of the same prefix would write over
/// what is being read.
fn refuse_overwrite<'a>(
    inputs: impl Iterator<Item = &'a Path>,
    prefix: &Path,
    parity: u32,
) -> Result<(), Failure> {
    let canon = |p: &Path| fs_err::canonicalize(p).ok();
    let inputs: Vec<PathBuf> = inputs.filter_map(canon).collect();
    let probe = [
        crate::bundle::volumes::data_volume_path(prefix, 1),
        crate::bundle::volumes::parity_volume_path(prefix, parity.max(1)),
    ];
    for input in &inputs {
        if names_a_volume_of(prefix, input)
            || probe.iter().filter_map(|p| canon(p)).any(|p| &p == input)
        {
            return Err(InputFailure(format!(
                "the volumes {}.* would replace {}, which is being read: give another -o PREFIX",
                prefix.display(),
                input.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// Whether `path` (absolute, its folder resolved) names a volume of the set with
/// `prefix` (`PREFIX.NNN` or `PREFIX.pNN` in the prefix's folder): one that writing
/// that set writes or, as left from an earlier set, removes.
pub(super) fn names_a_volume_of(prefix: &Path, path: &Path) -> bool {
    let dir = prefix.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = fs_err::canonicalize(dir.unwrap_or(Path::new("."))).ok();
    dir.as_deref() == path.parent()
        && crate::bundle::volumes::parse_volume_path(path)
            .is_some_and(|(p, _)| p.file_name() == prefix.file_name())
}

/// Keeps a copy of every byte read (the head, which `split` writes too).
struct Recording<'a> {
    inner: &'a mut dyn Read,
    bytes: Vec<u8>,
}

impl Read for Recording<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// Hands every byte read to `out` as well.
struct Tee<'a, W: Write> {
    inner: &'a mut dyn Read,
    out: &'a mut W,
}

impl<W: Write> Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// The joined file read back for verification. Bytes found damaged in it were
/// copied from a volume that the source, told of the damage, may now rebuild from
/// parity: they are copied once more, and read again.
struct CopyBack<'a> {
    copy: std::fs::File,
    src: &'a dyn ReadAt,
    /// Ranges copied again (by offset): a second failure there is final.
    again: Mutex<BTreeSet<u64>>,
}

impl ReadAt for CopyBack<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.copy, buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.copy.metadata()?.len())
    }

    fn damaged(&self, offset: u64, len: u64, what: &str) -> io::Result<Reread> {
        let first = self
            .again
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(offset);
        match self.src.damaged(offset, len, what)? {
            _ if first => {
                let mut buf = vec![0u8; (1 << 20).min(len) as usize];
                let mut done = 0;
                while done < len {
                    let want = (buf.len() as u64).min(len - done) as usize;
                    RangeReader::new(self.src, offset + done, want as u64)
                        .read_exact(&mut buf[..want])?;
                    std::os::unix::fs::FileExt::write_all_at(
                        &self.copy,
                        &buf[..want],
                        offset + done,
                    )?;
                    done += want as u64;
                }
                Ok(Reread::Again)
            }
            Reread::No(place) => Ok(Reread::No(place)),
            Reread::Again => Ok(Reread::No(None)),
        }
    }
}

/// Copies the `len` bytes of `src` to `out`, a megabyte at a time.
fn copy_out(
    src: &dyn ReadAt,
    len: u64,
    out: &mut dyn Write,
    progress: &Progress,
    name: &Path,
) -> Result<(), Failure> {
    let bar = progress.bar(format!("bundle {}", name.display()), len);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let want = (buf.len() as u64).min(len - at) as usize;
        let n = src.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(anyhow::anyhow!("the volumes ended at byte {at} of {len}").into());
        }
        out.write_all(&buf[..n])?;
        at += n as u64;
        bar.inc(n as u64);
    }
    out.flush()?;
    bar.clear();
    Ok(())
}

/// Runs join.
pub fn join(a: JoinArgs, out: &OutputArgs) -> Result<(), Failure> {
    let a = JoinSettings::resolve(a);
    let progress = Progress::new(out.quiet || out.json);
    let jobs = a.threads;
    let source = BundleSource::open(&a.first)?;
    source.report_to(&progress);
    let Some(src) = source.shared() else {
        return Err(InputFailure(format!(
            "{} is not a file: join reads volumes from files (to join a stream, `cat` is enough)",
            a.first.display()
        ))
        .into());
    };
    let target = fs_err::canonicalize(&a.output).ok();
    if let Some(t) = &target {
        if src
            .paths()
            .any(|p| fs_err::canonicalize(p).ok().as_ref() == Some(t))
        {
            return Err(InputFailure(format!(
                "{} is one of the volumes being joined: give another -o",
                a.output.display()
            ))
            .into());
        }
    }
    let len = src.len()?;
    let head = read_head(&mut io::BufReader::new(RangeReader::new(&*src, 0, len)))?;
    let mut file = AtomicFile::create(&a.output)?;
    let verifying = |what: &str, r: &dyn ReadAt| -> Result<(), Failure> {
        let bar = progress.bar(what.to_string(), head.manifest.data_len());
        verify_parallel(r, &head, jobs, &|n| bar.inc(n)).map_err(|e| source.place_damage(e))?;
        bar.clear();
        Ok(())
    };
    match file.temp_path().map(Path::to_path_buf) {
        Some(tmp) => {
            let out = fs_err::OpenOptions::new().write(true).open(&tmp)?;
            copy_out(
                &*src,
                len,
                &mut io::BufWriter::with_capacity(1 << 20, out),
                &progress,
                &a.output,
            )?;
            // The copy is checked from the page cache, in parallel; what is damaged
            // in it is copied again once the volumes had their say (rebuilt).
            let copy = CopyBack {
                copy: fs_err::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&tmp)?
                    .into_file(),
                src: &*src,
                again: Mutex::new(BTreeSet::new()),
            };
            verifying("checking the joined bundle", &copy)?;
        }
        None => {
            // An output that is not a regular file cannot be read back: check the
            // volumes themselves first.
            verifying("checking the volumes", &*src)?;
            copy_out(&*src, len, &mut file, &progress, &a.output)?;
        }
    }
    file.commit()?;
    let rebuilt = source.rebuilt_volumes();
    if out.json {
        print_json(&JoinReport {
            ok: true,
            bundle: a.output.clone(),
            digest: head.digest.to_string(),
            size: len,
            volumes: src.paths().map(Path::to_path_buf).collect(),
            rebuilt: rebuilt.clone(),
            notes: source.said(),
            signature_checked: false,
        });
    } else if !out.quiet {
        say!(
            "joined {} into {} ({}): every digest checked (the signature is checked by verify and import)",
            src.describe(),
            a.output.display(),
            human_bytes(len)
        );
        for r in &rebuilt {
            say!("  rebuilt {} from parity", r.display());
        }
        say!("digest {}", head.digest);
    }
    Ok(())
}
