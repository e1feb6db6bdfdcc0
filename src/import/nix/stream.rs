//! Nix paths into a store this process writes itself, through one `nix-store
//! --serve --write`, fed from the bundle file in place; and the question which
//! paths a store holds, asked of that same `nix-store` when the import goes on
//! with it ([`Kept`]).
//!
//! `nix copy` from the in-place server (see `super::store`) costs some milliseconds
//! per path however small it is: a narinfo request, a NAR request, a row in Nix's
//! narinfo cache, a substitution goal. A NixOS closure is 1,000 to 2,000 paths,
//! most of them a few KiB, so that was most of its import (3x `nix-store --import`
//! on 2,101 tiny paths). Nix's serve protocol ([`crate::nixfmt::serve_proto`]) adds
//! a path for what `nix-store --import` costs, and with its whole registration:
//! signatures and content address included, so the store ends up holding what
//! `nix copy` would have registered, in one step per path (an import killed at any
//! point leaves each path either registered and signed or not at all). Unlike
//! `nix-store --import` (Nix issue 9610), Nix streams each NAR into the store as it
//! reads it, so paths of any size go this way, with no HTTP between the bundle and
//! Nix. Nix is told not to check the signatures (the serve protocol's
//! `AddToStoreNar` never does), so it is used only where this process writes the
//! store itself (a chroot store, or the local store as root), after the signatures
//! were checked here; a daemon checks the signatures of what an untrusted user
//! imports, and `nix copy` goes there.
//!
//! Nothing unchecked reaches Nix: each blob is read from the file again, hashed,
//! decompressed (the bounded decoder) and parsed ([`NarChecker`], limited to the
//! declared NAR size). A NAR of at most [`STREAM_WHOLE_MAX`] is checked whole in
//! memory before Nix gets a byte of it; a larger one is handed over as it checks
//! out, but its last byte only once the blob hashed to its verified digest and the
//! NAR is exactly the declared one. Nix restores and registers a path only once it
//! has every byte of its NAR (and checks the NAR against its signed hash again).
//! On a fault the conversation ends there: the paths before it are whole, valid
//! and signed (a rerun skips them); the one at fault was never registered (what Nix
//! restored of it is removed, see `NixTarget::remove_unregistered`), and no later
//! one was started.

use std::io::{self, BufReader, BufWriter, Write};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::bundle::decode::{zstd_context, zstd_writer_in};
use crate::bundle::digest::Hasher;
use crate::bundle::reader::ReadAt;
use crate::bundle::Digest;
use crate::io::process::{nix_cmd, ProcessError, Session};
use crate::io::serve::Fault;
use crate::nixfmt::serve_proto::{
    read_ack, read_hello, read_path_infos, write_add_to_store_nar, write_hello,
    write_query_path_infos, HeldPath, Registration, ServeProtoError,
};
use crate::nixfmt::{NarChecker, StorePath};

use super::validate::NixObject;

/// The largest NAR checked whole in memory before Nix gets any of it; a larger one
/// is sent as it checks out, its last byte held back (see [`send_one`]).
pub(super) const STREAM_WHOLE_MAX: u64 = 1 << 20;

/// Paths handed to Nix before the importer reads its answers: Nix writes 8 bytes
/// per path, so this keeps its answers (8 KiB) far below a pipe's 64 KiB, and it
/// never blocks writing one while the importer blocks writing the next path.
const UNANSWERED_MAX: usize = 1024;

/// At most this many paths, and [`EARLY_BYTES_MAX`] bytes of them, are checked
/// into memory while a new `nix-store` starts (see [`import`]). Nix answers each
/// only once it has them all, so its answers (8 bytes a path, 32 KiB) still fit
/// the pipe back, as for [`UNANSWERED_MAX`].
const EARLY_PATHS_MAX: usize = 4096;

/// The bytes of the paths checked into memory while Nix starts.
const EARLY_BYTES_MAX: usize = 8 << 20;

/// Why the stream stopped.
#[derive(Debug)]
pub(super) enum StreamError {
    /// A blob was not what it verified as, or not the declared NAR: it was not
    /// handed to Nix, and neither was any later one.
    Fault(Digest, Fault),
    /// Nix failed (its stderr is in the error).
    Nix(ProcessError),
}

/// One path to stream: its object (whose blob is `object.entry`) and the blob's
/// position in the file.
pub(super) struct Item<'a> {
    pub(super) object: &'a NixObject,
    pub(super) offset: u64,
}

/// A `nix-store --serve` (with `--write`: one that may add paths) on the store `uri`
/// (`None`: the local store).
fn serve(uri: Option<&str>, write: bool) -> Result<Session, ProcessError> {
    let mut cmd = nix_cmd("nix-store");
    if let Some(u) = uri {
        cmd = cmd.args(["--store", u]);
    }
    cmd = cmd.arg("--serve");
    if write {
        cmd = cmd.arg("--write");
    }
    cmd.session()
}

/// A `nix-store --serve --write` that answered which paths the store holds and is
/// kept for the import that follows ([`held`], [`import`]): an import into a store
/// that exists then starts Nix once, not twice (about 35 ms each here). It writes
/// nothing until it is handed a path; dropped, it sees its input end and exits.
pub(super) struct Kept(Session);

impl Kept {
    /// Ends the conversation: Nix's exit status, with its stderr when it failed.
    pub(super) fn finish(self) -> Result<(), ProcessError> {
        self.0.finish()
    }
}

/// A `nix-store --serve` started before it is asked anything, its greeting sent:
/// the import starts it while the bundle's head is still being read, so that Nix
/// starting up (15 to 20 ms here, as long as reading a 2,101-path head) is not
/// waited for ([`start`], then [`held`]).
pub(super) struct Started {
    nix: Session,
    /// Whether it was started with `--write`.
    write: bool,
}

/// Starts the `nix-store --serve` (with `write`, `--write`) that [`held`] asks of
/// the store `uri` (`None`: the local store), and sends it the greeting. It reads
/// nothing of the store's paths until it is asked; dropped, it sees its input end
/// and exits.
pub(super) fn start(uri: Option<&str>, write: bool) -> Result<Started, ProcessError> {
    let mut nix = serve(uri, write)?;
    let (stdin, _) = nix.pipes();
    // Should the write fail, Nix has exited: `held` then reads no greeting and
    // reports Nix's own error.
    let _ = write_hello(stdin);
    Ok(Started { nix, write })
}

/// The question [`held`] may ask ahead of the one about every path: whether the
/// store holds all of `paths` (the closure's roots), told to `answer` as soon as
/// Nix says, while it is still answering about the rest. A store is closed under
/// references, so when it holds the roots it holds everything below them: the
/// import is most likely a rerun, and the caller need not start work that only
/// an import that adds paths needs. Only a hint: the full answer decides.
pub(super) struct Probe<'a> {
    pub(super) paths: &'a [&'a StorePath],
    pub(super) answer: &'a mut dyn FnMut(bool),
}

/// Which of `paths` are valid in the store `uri`, with the NAR hash and the
/// signatures Nix holds for each: one `nix-store --serve` for all of them, where
/// `nix-store --check-validity` and `nix path-info` were two processes, each given
/// the paths as arguments a few thousand at a time. With `keep`, the `nix-store`
/// is started with `--write` and kept, for [`import`] to go on with. `started`, if
/// it is a `nix-store` of that kind ([`start`]), is the one asked; `probe` is
/// asked first, in the same conversation.
pub(super) fn held(
    uri: Option<&str>,
    paths: &[&StorePath],
    keep: bool,
    started: Option<Started>,
    probe: Option<Probe<'_>>,
) -> Result<(Vec<HeldPath>, Option<Kept>), ProcessError> {
    let (mut nix, greeted) = match started {
        Some(s) if s.write == keep => (s.nix, true),
        _ => (serve(uri, keep)?, false),
    };
    let answer = {
        let (stdin, stdout) = nix.pipes();
        let mut answers = BufReader::new(stdout);
        let mut out = BufWriter::with_capacity(256 << 10, stdin);
        // Nix reads the whole set before it answers, so the questions are written
        // whole first; it answers them in turn.
        (if greeted {
            Ok(())
        } else {
            write_hello(&mut out)
        })
        .and_then(|()| match &probe {
            Some(p) => write_query_path_infos(&mut out, p.paths),
            None => Ok(()),
        })
        .and_then(|()| write_query_path_infos(&mut out, paths))
        .and_then(|()| out.flush())
        .map_err(ServeProtoError::from)
        .and_then(|()| read_hello(&mut answers))
        .and_then(|_| match probe {
            Some(p) => {
                read_path_infos(&mut answers).map(|roots| (p.answer)(roots.len() == p.paths.len()))
            }
            None => Ok(()),
        })
        .and_then(|()| read_path_infos(&mut answers))
    };
    match answer {
        Ok(held) if keep => Ok((held, Some(Kept(nix)))),
        Ok(held) => nix.finish().map(|()| (held, None)),
        Err(e) => Err(broken(nix, e)),
    }
}

/// Why a conversation with Nix broke off: Nix's exit and stderr when it failed,
/// otherwise what was wrong with what it sent (or with the pipe).
fn broken(nix: Session, e: ServeProtoError) -> ProcessError {
    let command = nix.command().to_string();
    match nix.finish() {
        Err(failed) => failed,
        Ok(()) => ProcessError::Io {
            command,
            source: io::Error::other(e),
        },
    }
}

/// Adds `items` (references first) to the store `uri` (`None`: the local store)
/// through one `nix-store --serve --write` (`kept`, the one that said what the
/// store holds, or a new one), reading the blobs from `source`. `on_bytes` is told
/// the stored bytes of each blob as they are read. A new one is handed, right after
/// its greeting, the small paths checked while it started up (at most
/// [`EARLY_PATHS_MAX`] and [`EARLY_BYTES_MAX`]).
pub(super) fn import(
    uri: Option<&str>,
    kept: Option<Kept>,
    source: &dyn ReadAt,
    items: &[Item<'_>],
    on_bytes: &dyn Fn(u64),
) -> Result<(), StreamError> {
    // One decoding context for every blob (see `zstd_context`); it can only fail
    // to be made for want of memory.
    let mut ctx = zstd_context().map_err(|e| {
        StreamError::Nix(ProcessError::Io {
            command: "a zstd decoder for the NARs".into(),
            source: e,
        })
    })?;
    let greeted = kept.is_some();
    let mut nix = match kept {
        Some(Kept(nix)) => nix,
        None => serve(uri, true).map_err(StreamError::Nix)?,
    };
    let mut buf = vec![0u8; 256 << 10];
    let mut nar = Vec::new();
    let talked = {
        let (stdin, stdout) = nix.pipes();
        let mut out = BufWriter::with_capacity(256 << 10, stdin);
        let mut answers = BufReader::new(stdout);
        let mut unanswered = 0usize;
        let mut sent = 0usize;
        // A kept conversation is past its greeting.
        let mut talked = if greeted {
            Ok(())
        } else {
            // A new `nix-store` takes some 25 ms to start (and to make a fresh
            // store) before it greets. Meanwhile the first small paths are checked
            // and held in memory, to be handed over at once after the greeting:
            // the checking is then not done beside Nix's own work on the other
            // core, where the two compete (2,101 tiny paths into a fresh store:
            // 0.979 of the time, docs/benchmarks.md).
            let mut early = Vec::new();
            let mut checked = write_hello(&mut out)
                .and_then(|()| out.flush())
                .map_err(|e| Talk::Pipe(e.into()));
            if checked.is_ok() {
                while sent < items.len()
                    && sent < EARLY_PATHS_MAX
                    && early.len() < EARLY_BYTES_MAX
                    && items[sent].object.nar_size <= STREAM_WHOLE_MAX
                    && !has_spoken(&answers)
                {
                    if let Err(e) = send_one(
                        &mut early,
                        source,
                        &items[sent],
                        &mut buf,
                        &mut nar,
                        &mut ctx,
                        on_bytes,
                    ) {
                        checked = Err(e);
                        break;
                    }
                    sent += 1;
                }
            }
            // The paths checked before a fault are whole: Nix gets them.
            let hello = read_hello(&mut answers)
                .map_err(Talk::Pipe)
                .and_then(|_| out.write_all(&early).map_err(|e| Talk::Pipe(e.into())));
            unanswered = sent;
            hello.and(checked)
        };
        for item in &items[sent..] {
            if talked.is_err() {
                break;
            }
            talked = send_one(
                &mut out, source, item, &mut buf, &mut nar, &mut ctx, on_bytes,
            )
            .and_then(|()| {
                unanswered += 1;
                if unanswered >= UNANSWERED_MAX {
                    out.flush().map_err(|e| Talk::Pipe(e.into()))?;
                    let ready = answered(&answers, UNANSWERED_MAX / 4);
                    for _ in 0..ready {
                        read_ack(&mut answers).map_err(Talk::Pipe)?;
                    }
                    unanswered -= ready;
                }
                Ok(())
            });
        }
        // The paths handed over before a fault are whole: let Nix finish them.
        let flushed = out
            .flush()
            .map_err(|e| Talk::Pipe(e.into()))
            .and_then(|()| {
                answered(&answers, unanswered);
                (0..unanswered).try_for_each(|_| read_ack(&mut answers).map_err(Talk::Pipe))
            });
        match talked {
            Ok(()) => flushed,
            fault => fault,
        }
    };
    match talked {
        Ok(()) => nix.finish().map_err(StreamError::Nix),
        Err(Talk::Fault(d, f)) => {
            // Nix sees its input end, between two paths or before the held-back
            // last byte of a NAR, and stops without registering that path.
            let _ = nix.finish();
            Err(StreamError::Fault(d, f))
        }
        // Nix stopped answering: its exit says why.
        Err(Talk::Pipe(e)) => Err(StreamError::Nix(broken(nix, e))),
    }
}

/// The pipe from Nix's state, asked without waiting (a poll with no timeout):
/// readable, hung up, or neither (empty); `None` when it cannot be asked.
fn pipe_state(answers: &BufReader<&mut std::process::ChildStdout>) -> Option<PollFlags> {
    let mut fds = [PollFd::new(answers.get_ref(), PollFlags::IN)];
    poll(&mut fds, Some(&Timespec::default())).ok()?;
    Some(fds[0].revents())
}

/// Whether Nix has written anything yet (its greeting), asked without waiting; a
/// pipe that cannot be asked counts as spoken, and the importer goes on to read.
fn has_spoken(answers: &BufReader<&mut std::process::ChildStdout>) -> bool {
    !answers.buffer().is_empty() || pipe_state(answers).is_none_or(|state| !state.is_empty())
}

/// Waits until Nix has answered at least `n` of the paths handed to it, or has
/// hung up, and says how many answers (at most `n`, at least one) can be read
/// without blocking. It sleeps between looks instead of waiting on the pipe: a
/// reader blocked there is woken by each 8-byte answer, and those wakeups, one per
/// path on the other core, slowed Nix by a quarter (2,101 tiny paths replayed into
/// `nix-store --serve --write`: 0.26 s with its answers to /dev/null or to a reader
/// that looks later, 0.33 s to a reader blocked on them). When the pipe cannot be
/// asked, reading goes on as before (blocking).
fn answered(answers: &BufReader<&mut std::process::ChildStdout>, n: usize) -> usize {
    const ACK: usize = 8;
    loop {
        let Ok(piped) = rustix::io::ioctl_fionread(answers.get_ref()) else {
            return 1;
        };
        let ready = (answers.buffer().len() + piped as usize) / ACK;
        if ready >= n {
            return n.max(1);
        }
        let hung_up = pipe_state(answers)
            .is_none_or(|state| state.intersects(PollFlags::HUP | PollFlags::ERR));
        if hung_up {
            // What it answered, then the end (or an error) for the caller to meet.
            return ready.clamp(1, n.max(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

enum Talk {
    Fault(Digest, Fault),
    Pipe(ServeProtoError),
}

/// Hands one path to Nix: its registration, then its NAR, read from the blob,
/// hashed, decompressed and parsed as it goes. A NAR of at most
/// [`STREAM_WHOLE_MAX`] is checked whole in `nar` before Nix sees any of it; a
/// larger one goes to Nix as it checks out, all but its last byte, which is sent
/// only once the blob hashed to its digest and the NAR is exactly the declared one.
/// Nix registers a path only once it has all of its NAR (and checked its hash), so
/// a fault leaves Nix waiting for that byte; the caller then ends the conversation
/// and Nix registers nothing of that path.
fn send_one(
    out: &mut dyn Write,
    source: &dyn ReadAt,
    item: &Item<'_>,
    buf: &mut [u8],
    nar: &mut Vec<u8>,
    ctx: &mut zstd::zstd_safe::DCtx<'static>,
    on_bytes: &dyn Fn(u64),
) -> Result<(), Talk> {
    let blob = &item.object.entry;
    let fault = |f| Talk::Fault(blob.digest, f);
    let Some(content) = &blob.content else {
        return Err(fault(Fault::Content("it has no content digest".into())));
    };
    if content.size != item.object.nar_size || content.size == 0 {
        return Err(fault(Fault::Content(format!(
            "its NAR is declared as {} bytes, and its path's NAR size is {}",
            content.size, item.object.nar_size
        ))));
    }
    let o = item.object;
    let reg = Registration {
        path: &o.path,
        deriver: o.deriver.as_ref(),
        nar_hash: &o.nar_hash,
        references: &o.references,
        nar_size: content.size,
        sigs: &o.sigs,
        ca: o.ca.as_deref(),
    };
    let pipe = |e: io::Error| Talk::Pipe(e.into());
    let whole = content.size <= STREAM_WHOLE_MAX;
    nar.clear();
    let sink = if whole {
        Sink::Whole(nar)
    } else {
        write_add_to_store_nar(out, &reg).map_err(pipe)?;
        Sink::Forward {
            out: &mut *out,
            // Everything but the last byte.
            left: content.size - 1,
            last: None,
        }
    };
    let tee = Tee {
        check: NarChecker::with_limit(content.size),
        sink,
        refused: None,
        pipe: None,
    };
    let mut dec = zstd_writer_in(tee, ctx);
    let mut hasher = Hasher::new();
    let mut pos = 0u64;
    while pos < blob.size {
        let want = (blob.size - pos).min(buf.len() as u64) as usize;
        let n = match source.read_at(&mut buf[..want], item.offset + pos) {
            Ok(0) => return Err(fault(Fault::Unreadable("the file ended early".into()))),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fault(Fault::Unreadable(e.to_string()))),
        };
        hasher.update(&buf[..n]);
        pos += n as u64;
        on_bytes(n as u64);
        if let Err(e) = dec.write_all(&buf[..n]).and_then(|()| dec.flush()) {
            let tee = dec.get_mut();
            if let Some(why) = tee.refused.take() {
                return Err(fault(Fault::Content(why)));
            }
            if let Some(p) = tee.pipe.take() {
                return Err(pipe(p));
            }
            return Err(fault(Fault::Content(format!("it is not valid zstd: {e}"))));
        }
    }
    let (found, _) = hasher.finish();
    if found != blob.digest {
        return Err(fault(Fault::Changed(found)));
    }
    let tee = dec.into_inner();
    let summary = tee
        .check
        .finish()
        .map_err(|e| fault(Fault::Content(e.to_string())))?;
    if summary.digest != content.digest || summary.size != content.size {
        return Err(fault(Fault::Content(format!(
            "it decompresses to a NAR of {} bytes with sha256 {}, not the declared {} bytes with sha256 {}",
            summary.size, summary.digest, content.size, content.digest
        ))));
    }
    let forwarded = match tee.sink {
        Sink::Whole(_) => None,
        // The parser saw exactly `content.size` bytes, so the last one is held.
        Sink::Forward { out, last, .. } => Some(match last {
            Some(b) => out.write_all(&[b]).map_err(pipe),
            None => Err(fault(Fault::Content(
                "its NAR ended before its last byte was held back".into(),
            ))),
        }),
    };
    match forwarded {
        Some(sent) => sent,
        None => write_add_to_store_nar(out, &reg)
            .and_then(|()| out.write_all(nar))
            .map_err(pipe),
    }
}

/// Where the checked bytes of a NAR go.
enum Sink<'a> {
    /// Kept, to be sent whole once checked.
    Whole(&'a mut Vec<u8>),
    /// Sent to Nix as they come, the last byte held back.
    Forward {
        out: &'a mut dyn Write,
        /// Bytes still to send before the last.
        left: u64,
        last: Option<u8>,
    },
}

/// Passes on only the decoded bytes the NAR parser accepted (at most the declared
/// size, which the parser enforces).
struct Tee<'a> {
    check: NarChecker,
    sink: Sink<'a>,
    refused: Option<String>,
    /// A write to Nix that failed.
    pipe: Option<io::Error>,
}

impl Write for Tee<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Err(e) = self.check.feed(data) {
            self.refused = Some(e.to_string());
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        match &mut self.sink {
            Sink::Whole(nar) => nar.extend_from_slice(data),
            Sink::Forward { out, left, last } => {
                let now = (*left).min(data.len() as u64) as usize;
                if let Err(e) = out.write_all(&data[..now]) {
                    let kind = e.kind();
                    self.pipe = Some(e);
                    return Err(io::Error::new(kind, "the pipe to nix-store --serve"));
                }
                *left -= now as u64;
                // The parser allows no more than the declared size: at most one
                // byte is left over, the last.
                if let Some(&b) = data[now..].last() {
                    *last = Some(b);
                }
            }
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
