//! A bundle file served in place over loopback HTTP.
//!
//! Nix already knows how to take paths from a binary cache, and a bundle's Nix blobs
//! are exactly a binary cache's `.nar.zst` files. Copying them out of the bundle
//! into a staging folder first (what a `file://` cache needs) writes every byte once
//! more and then makes the disk write back and delete it while Nix fills the store:
//! on the benchmark closure that staging was a third of the import. Served from the
//! bundle file itself, the only writes are Nix's own.
//!
//! So this serves a fixed set of documents on `127.0.0.1` under a random path
//! prefix: small ones held in memory (narinfos) and byte ranges of one bundle source
//! read at any offset (a file, or the volumes of a split bundle:
//! [`crate::io::source`]).
//! It is a server for one local client, not for a network: HTTP/1.1 with
//! keep-alive, `GET` and `HEAD`, and the `Range: bytes=N-` form curl sends to resume
//! a transfer. Anything else is refused.
//!
//! A range was verified when the bundle streamed, but the file could change between
//! then and now (a flaky USB disk, someone writing to it). Each range is hashed again
//! as it is served, and its last chunk is only sent once the digest matched: a
//! client can never receive the whole of a range whose bytes are not the verified
//! ones. A mismatch is recorded ([`Server::failures`]), the connection is dropped,
//! and later requests for that document get `410 Gone`.
//!
//! A range may also be a zstd NAR ([`Resource::Range`]'s `nar`), which the client
//! decompresses and restores as it reads, before it can compare the NAR's hash: a
//! signed bundle whose NAR decompresses to gigabytes (or to no valid NAR) would
//! fill the client's store first. Such a range is decompressed and parsed
//! ([`crate::nixfmt::NarChecker::shape_only`], limited to the declared NAR size) as
//! it is served, each chunk before it is sent: the client never receives a chunk
//! that decompresses past the declared size or into an invalid NAR, nor the last
//! chunk of one that ends short of it. The NAR's hash is left to the client, which
//! compares it anyway before it registers anything: hashing the NAR here as well
//! was a third of what this check costs.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::bundle::decode::zstd_writer;
use crate::bundle::digest::{Digest, Hasher};
use crate::bundle::manifest::ContentInfo;
use crate::bundle::reader::{RangeReader, ReadAt};
use crate::nixfmt::NarChecker;

/// What ranges are read from: shared with the connection threads.
pub type Served = Arc<dyn ReadAt + Send>;

/// How long an idle connection is kept open.
const IDLE: Duration = Duration::from_secs(60);
/// Bytes read from the file and written to the socket at a time.
const CHUNK: usize = 256 << 10;
/// Longest request head accepted.
const MAX_HEAD: usize = 16 << 10;

/// One document.
#[derive(Debug, Clone)]
pub enum Resource {
    /// Bytes held in memory.
    Text {
        /// The body.
        body: Arc<[u8]>,
        /// Its media type.
        content_type: &'static str,
    },
    /// A byte range of the served source, checked against `digest` as it is sent.
    Range {
        /// Where the range starts in the source.
        offset: u64,
        /// Its length.
        size: u64,
        /// The sha256 its bytes must have.
        digest: Digest,
        /// When the range is a zstd-compressed NAR: the NAR's hash and size, which
        /// what it decompresses to must be.
        nar: Option<ContentInfo>,
    },
}

impl Resource {
    /// A text document.
    pub fn text(body: impl Into<Vec<u8>>, content_type: &'static str) -> Self {
        Resource::Text {
            body: body.into().into(),
            content_type,
        }
    }
}

/// A range that was cut short as it was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The document's name (below the prefix).
    pub name: String,
    /// The digest it must have.
    pub expected: Digest,
    /// What was wrong.
    pub found: Fault,
}

/// Why a range was cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Its bytes had this digest, not the verified one: the file changed.
    Changed(Digest),
    /// Its bytes could not be read (the message says why).
    Unreadable(String),
    /// Its bytes are the verified ones, but what they decompress to is not the
    /// declared NAR (the message says why).
    Content(String),
}

struct Shared {
    source: Served,
    site: BTreeMap<String, Resource>,
    prefix: String,
    /// Ranges found changed; each is `410 Gone` from then on.
    failures: Mutex<Vec<Mismatch>>,
    stop: AtomicBool,
}

/// A running server; stopped when dropped.
pub struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `site` (names without a leading `/`) from `source` on a free loopback
    /// port, under a random path prefix so that no client cache can mistake one
    /// run's documents for another's.
    pub fn start(source: Served, site: BTreeMap<String, Resource>) -> io::Result<Server> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let prefix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let shared = Arc::new(Shared {
            source,
            site,
            prefix: format!("/{prefix}/"),
            failures: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("serve-accept".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(Server {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    /// The base URL, without a trailing slash (`http://127.0.0.1:PORT/PREFIX`).
    pub fn url(&self) -> String {
        format!(
            "http://{}{}",
            self.addr,
            self.shared.prefix.trim_end_matches('/')
        )
    }

    /// The ranges found not to be what they must be, so far.
    pub fn failures(&self) -> Vec<Mismatch> {
        self.shared
            .failures
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else {
            // Out of file descriptors, say: wait a little rather than spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let s = shared.clone();
        // One thread per connection: the client is one local process with a few
        // connections, and a blocking thread each keeps the code plain.
        let _ = std::thread::Builder::new()
            .name("serve-conn".into())
            .spawn(move || {
                let _ = serve_connection(conn, &s);
            });
    }
}

/// A parsed request head.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    /// `Range: bytes=N-`, the only range form served.
    resume_from: Option<u64>,
    close: bool,
}

/// Reads one line of a request head into `line`, counting it against `MAX_HEAD`.
fn head_line(r: &mut impl BufRead, line: &mut String, total: &mut usize) -> io::Result<usize> {
    line.clear();
    let n = io::Read::take(&mut *r, (MAX_HEAD - *total) as u64).read_line(line)?;
    *total += n;
    if n > 0 && !line.ends_with('\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request head too long",
        ));
    }
    Ok(n)
}

/// Reads one request head; `None` when the client closed the connection.
fn read_request(r: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    let mut total = 0;
    let mut next = |line: &mut String| head_line(r, line, &mut total);
    if next(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        resume_from: None,
        close: version == "HTTP/1.0",
    };
    loop {
        if next(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok(Some(req));
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("connection") {
            req.close = v.eq_ignore_ascii_case("close");
        } else if k.eq_ignore_ascii_case("range") {
            req.resume_from = v
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse().ok());
        } else if k.eq_ignore_ascii_case("content-length") && v != "0" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request bodies are not accepted",
            ));
        }
    }
}

fn serve_connection(conn: TcpStream, shared: &Shared) -> io::Result<()> {
    conn.set_read_timeout(Some(IDLE))?;
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(_) => return status(&mut out, "400 Bad Request", true),
        };
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let head_only = match req.method.as_str() {
            "GET" => false,
            "HEAD" => true,
            _ => {
                status(&mut out, "405 Method Not Allowed", true)?;
                return Ok(());
            }
        };
        let name = req.target.strip_prefix(shared.prefix.as_str());
        let found = name.and_then(|n| shared.site.get(n).map(|r| (n, r)));
        let gone = name.is_some_and(|n| {
            shared
                .failures
                .lock()
                .is_ok_and(|f| f.iter().any(|m| m.name == n))
        });
        match found {
            None => status(&mut out, "404 Not Found", req.close)?,
            Some(_) if gone => status(&mut out, "410 Gone", req.close)?,
            Some((_, Resource::Text { body, content_type })) => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n",
                    body.len(),
                    connection_header(req.close)
                )?;
                if !head_only {
                    out.write_all(body)?;
                }
            }
            Some((
                n,
                Resource::Range {
                    offset,
                    size,
                    digest,
                    nar,
                },
            )) => {
                let from = req.resume_from.filter(|f| *f < *size);
                let (code, extra) = match from {
                    Some(f) => (
                        "206 Partial Content",
                        format!("Content-Range: bytes {f}-{}/{size}\r\n", size - 1),
                    ),
                    None => ("200 OK", String::new()),
                };
                write!(
                    out,
                    "HTTP/1.1 {code}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{extra}{}\r\n",
                    size - from.unwrap_or(0),
                    connection_header(req.close)
                )?;
                if !head_only {
                    let sent = send_range(
                        &*shared.source,
                        Range {
                            offset: *offset,
                            size: *size,
                            digest,
                            nar: nar.as_ref(),
                        },
                        from.unwrap_or(0),
                        &mut out,
                    )?;
                    if let Err(found) = sent {
                        let bad = Mismatch {
                            name: n.to_string(),
                            expected: *digest,
                            found,
                        };
                        if let Ok(mut f) = shared.failures.lock() {
                            f.push(bad);
                        }
                        // The last chunk was not sent: the client sees a short body.
                        return Ok(());
                    }
                }
            }
        }
        out.flush()?;
        if req.close {
            return Ok(());
        }
    }
}

fn connection_header(close: bool) -> &'static str {
    if close {
        "Connection: close\r\n"
    } else {
        ""
    }
}

fn status(out: &mut TcpStream, code: &str, close: bool) -> io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {code}\r\nContent-Length: 0\r\n{}\r\n",
        connection_header(close)
    )?;
    out.flush()?;
    if close {
        // Closing with unread request bytes makes the kernel reset the connection,
        // and the client may then lose the answer: say we are done, then read
        // what is left for a moment.
        out.shutdown(std::net::Shutdown::Write)?;
        out.set_read_timeout(Some(Duration::from_secs(1)))?;
        let _ = io::copy(&mut io::Read::take(&mut *out, 1 << 20), &mut io::sink());
    }
    Ok(())
}

/// One range to serve: where it is, what it must hash to, and (for a NAR) what it
/// must decompress to.
struct Range<'a> {
    offset: u64,
    size: u64,
    digest: &'a Digest,
    nar: Option<&'a ContentInfo>,
}

/// Decompresses and parses a zstd NAR chunk by chunk, as it is served.
struct NarCheck {
    decoder: zstd::stream::write::Decoder<'static, NarChecker>,
    content: ContentInfo,
}

impl NarCheck {
    fn new(content: &ContentInfo) -> Result<Self, Fault> {
        Ok(NarCheck {
            decoder: zstd_writer(NarChecker::shape_only(content.size))
                .map_err(|e| Fault::Content(format!("cannot start a zstd decoder: {e}")))?,
            content: content.clone(),
        })
    }

    /// Takes the next chunk of compressed bytes: every byte it decompresses to has
    /// been parsed when this returns `Ok`.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), Fault> {
        self.decoder
            .write_all(chunk)
            .and_then(|()| self.decoder.flush())
            .map_err(|e| Fault::Content(nar_fault(e)))
    }

    /// After the last chunk: the NAR is complete, valid and of the declared size
    /// (its hash is the client's to compare).
    fn finish(self) -> Result<(), Fault> {
        let size = self
            .decoder
            .into_inner()
            .finish_shape()
            .map_err(|e| Fault::Content(e.to_string()))?;
        if size != self.content.size {
            return Err(Fault::Content(format!(
                "it decompresses to a NAR of {size} bytes, not the declared {}",
                self.content.size
            )));
        }
        Ok(())
    }
}

/// What a decoder or the NAR checker said, without the `io::Error` wrapping.
fn nar_fault(e: io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => format!("not valid zstd: {e}"),
    }
}

/// Sends bytes `from..size` of `range`, hashing all of it (the part before `from`
/// too) and, for a NAR, decompressing and parsing each chunk before it is sent;
/// the last chunk goes only if the digest (and the NAR) is right. The inner `Err`
/// is what was wrong.
///
/// A client that goes away mid-range (a Nix that failed on its own: a full store
/// disk, or bytes it could not decompress) may have been sent changed bytes, or
/// may have failed for its own reasons. So the rest of the range is still read,
/// hashed and (for a NAR) checked: a digest or a NAR that is wrong is recorded as
/// usual, and only when the bytes were the verified ones is the socket error
/// returned (the outer `Err`), which is not recorded: the client's own error is
/// then the one to report.
fn send_range(
    source: &dyn ReadAt,
    range: Range<'_>,
    from: u64,
    out: &mut impl Write,
) -> io::Result<Result<(), Fault>> {
    let Range {
        offset,
        size,
        digest,
        nar,
    } = range;
    let mut hasher = Hasher::new();
    let mut check = match nar.map(NarCheck::new).transpose() {
        Ok(check) => check,
        Err(fault) => return Ok(Err(fault)),
    };
    // A NAR found wrong mid-range: nothing more is sent, but the rest is still
    // hashed, to tell a changed file (which decompresses to garbage too) from a
    // bundle made wrong.
    let mut wrong: Option<Fault> = None;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    let mut gone: Option<io::Error> = None;
    while pos < size {
        let want = (size - pos).min(CHUNK as u64) as usize;
        let chunk = &mut buf[..want];
        if let Err(e) = RangeReader::new(source, offset + pos, want as u64).read_exact(chunk) {
            return Ok(Err(Fault::Unreadable(format!("reading the bundle: {e}"))));
        }
        let end = pos + want as u64;
        hasher.update(chunk);
        if wrong.is_none() {
            if let Some(c) = check.as_mut() {
                wrong = c.feed(chunk).err();
            }
        }
        if end == size {
            let (found, _) = std::mem::take(&mut hasher).finish();
            if found != *digest {
                return Ok(Err(Fault::Changed(found)));
            }
            if let Some(fault) = wrong.take() {
                return Ok(Err(fault));
            }
            if let Some(Err(fault)) = check.take().map(NarCheck::finish) {
                return Ok(Err(fault));
            }
        }
        if end > from && wrong.is_none() && gone.is_none() {
            let skip = from.saturating_sub(pos) as usize;
            gone = out.write_all(&chunk[skip..]).err();
        }
        pos = end;
    }
    match gone {
        Some(e) => Err(e),
        None => Ok(Ok(())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(b: &[u8]) -> Digest {
        Digest::of(b)
    }

    /// A site with one text document and one range of a temp file.
    fn site(data: &[u8], range_digest: Digest) -> (Server, tempfile::NamedTempFile) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(data).unwrap();
        let mut site = BTreeMap::new();
        site.insert("info".into(), Resource::text("hello\n", "text/plain"));
        site.insert(
            "nar/x.nar.zst".into(),
            Resource::Range {
                offset: 3,
                size: data.len() as u64 - 3,
                digest: range_digest,
                nar: None,
            },
        );
        let s = Server::start(Arc::new(f.reopen().unwrap()), site).unwrap();
        (s, f)
    }

    /// Sends raw requests on one connection and returns everything the server
    /// sent until it closed the connection.
    fn exchange(s: &Server, requests: &str) -> Vec<u8> {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(requests.as_bytes()).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        got
    }

    fn prefix(s: &Server) -> String {
        s.shared.prefix.clone()
    }

    /// A client that takes `n` bytes and then goes away.
    struct Leaves(usize);

    impl Write for Leaves {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = b.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_client_that_goes_away_is_not_a_changed_file() {
        // Three chunks; the client leaves during the first.
        let data: Vec<u8> = (0..CHUNK * 5 / 2).map(|i| (i % 251) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        let file = f.reopen().unwrap();
        let size = data.len() as u64;
        // The bytes are the verified ones: the client's own trouble, not recorded.
        let range = |d| Range {
            offset: 0,
            size,
            digest: d,
            nar: None,
        };
        let verified = digest(&data);
        let sent = send_range(&file, range(&verified), 0, &mut Leaves(1000));
        assert_eq!(sent.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        // They changed after the client left: still found, and recorded.
        let mut changed = data.clone();
        changed[CHUNK * 2] ^= 1;
        let other = digest(&changed);
        let sent = send_range(&file, range(&other), 0, &mut Leaves(1000));
        assert_eq!(sent.unwrap(), Err(Fault::Changed(verified)));
    }

    #[test]
    fn a_bad_nar_is_recorded_even_when_the_client_went_away() {
        // The verified bytes, a NAR that starts well and ends short of the file
        // it declares: the bundle's fault, whatever the client did. The contents
        // do not compress, so the range is several chunks and the client leaves
        // during the first.
        fn nar_str(out: &mut Vec<u8>, s: &[u8]) {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        let mut plain = Vec::new();
        for s in ["nix-archive-1", "(", "type", "regular", "contents"] {
            nar_str(&mut plain, s.as_bytes());
        }
        let len = 3 * CHUNK;
        plain.extend_from_slice(&(4 * len as u64).to_le_bytes());
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        plain.extend((0..len).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }));
        let data = zstd::encode_all(&plain[..], 1).unwrap();
        assert!(data.len() > 2 * CHUNK);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        let file = f.reopen().unwrap();
        let declared = ContentInfo {
            digest: digest(&plain),
            size: plain.len() as u64,
        };
        let sent = send_range(
            &file,
            Range {
                offset: 0,
                size: data.len() as u64,
                digest: &digest(&data),
                nar: Some(&declared),
            },
            0,
            &mut Leaves(1000),
        );
        assert!(matches!(sent, Ok(Err(Fault::Content(_)))), "{sent:?}");
    }

    #[test]
    fn serves_text_ranges_and_resumes_on_one_connection() {
        let data: Vec<u8> = (0..(3 * CHUNK as u32 + 10)).map(|i| i as u8).collect();
        let (s, _f) = site(&data, digest(&data[3..]));
        let p = prefix(&s);
        let got = exchange(
            &s,
            &format!(
                "GET {p}info HTTP/1.1\r\nHost: x\r\n\r\nHEAD {p}info HTTP/1.1\r\n\r\nGET {p}nar/x.nar.zst HTTP/1.1\r\n\r\nGET {p}nar/x.nar.zst HTTP/1.1\r\nRange: bytes=5-\r\n\r\nGET {p}missing HTTP/1.1\r\nConnection: close\r\n\r\n"
            ),
        );
        let mut want = Vec::new();
        want.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n",
        );
        want.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\n",
        );
        let n = data.len() - 3;
        want.extend_from_slice(
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n").as_bytes(),
        );
        want.extend_from_slice(&data[3..]);
        want.extend_from_slice(
            format!("HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nContent-Range: bytes 5-{}/{n}\r\n\r\n", n - 5, n - 1).as_bytes(),
        );
        want.extend_from_slice(&data[8..]);
        want.extend_from_slice(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(got == want, "response differs from the expected bytes");
        assert!(s.failures().is_empty());
    }

    #[test]
    fn a_range_that_changed_is_cut_short_and_then_gone() {
        let data: Vec<u8> = (0..(2 * CHUNK as u32 + 100))
            .map(|i| (i * 7) as u8)
            .collect();
        let wrong = digest(b"not these bytes");
        let (s, _f) = site(&data, wrong);
        let p = prefix(&s);
        let got = exchange(&s, &format!("GET {p}nar/x.nar.zst HTTP/1.1\r\n\r\n"));
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &got[head_end..];
        // Everything but the last chunk arrived, and the connection was closed.
        assert_eq!(body.len(), 2 * CHUNK);
        assert_eq!(body, &data[3..3 + 2 * CHUNK]);
        let f = s.failures();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name, "nar/x.nar.zst");
        assert_eq!(f[0].expected, wrong);
        assert_eq!(f[0].found, Fault::Changed(digest(&data[3..])));
        let again = exchange(
            &s,
            &format!("GET {p}nar/x.nar.zst HTTP/1.1\r\nConnection: close\r\n\r\n"),
        );
        assert!(again.starts_with(b"HTTP/1.1 410 Gone\r\n"));
    }

    #[test]
    fn refuses_what_it_does_not_serve() {
        let data = b"0123456789";
        let (s, _f) = site(data, digest(&data[3..]));
        let p = prefix(&s);
        // Without the prefix nothing is found.
        let got = exchange(&s, "GET /info HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(got.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
        let got = exchange(&s, &format!("PUT {p}info HTTP/1.1\r\n\r\n"));
        assert!(got.starts_with(b"HTTP/1.1 405 Method Not Allowed\r\n"));
        let got = exchange(&s, "garbage\r\n\r\n");
        assert!(got.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        let long = format!(
            "GET {p}info HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        let got = exchange(&s, &long);
        assert!(got.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(s.url().starts_with("http://127.0.0.1:"));
        assert!(s.url().ends_with(p.trim_end_matches('/')));
    }
}
