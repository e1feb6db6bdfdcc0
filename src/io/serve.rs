//! The one HTTP server: byte ranges of verified bundles, checked again as they go out.
//!
//! Two commands serve a bundle in place, straight from its file (or the volumes of a
//! split bundle, [`crate::io::source`]), with no copy first: the Nix store import
//! hands Nix a binary cache on a loopback port for one `nix copy` (copying the NARs
//! out of the bundle first cost a third of the import), and `gapbundle serve` is a
//! site's registry and binary cache on the network. Both stand on this module, so
//! there is one server to keep, and it stands on hyper's HTTP/1.1 server over tokio,
//! with TLS by rustls: no HTTP parser of our own faces a network.
//!
//! What is served is decided by a [`Site`]: for each request it gives a [`Reply`],
//! whose body is empty, a few bytes held in memory, or a [`Blob`], a byte range of a
//! bundle source with the digest it must have. The server does the rest the same way
//! for every site:
//!
//! - **Every byte sent is checked again.** A range verified when the server started
//!   can change on disk later (a flaky USB disk, someone writing to the file). A blob
//!   is read in chunks and hashed as it goes out, from its first byte to its last
//!   even when a `Range` asks for less, and the chunk that ends the response is only
//!   sent once the whole blob hashed to its digest: no client ever receives the whole
//!   of a range whose bytes are not the verified ones. A mismatch (or a read error)
//!   cuts the response short, is recorded ([`Server::failures`]) and reported, and
//!   later requests for that blob get the site's [`Site::gone`] reply. A client
//!   that goes away mid-blob is not taken for a changed file, nor the other way
//!   round: the rest of the blob is still read and checked, and only a blob that is
//!   not the verified one is recorded ([`Server::finish`]).
//! - **A NAR is checked for what it decodes to.** A Nix client decompresses and
//!   restores a NAR as it reads it, and compares its hash only at the end: a signed
//!   bundle whose NAR decodes to gigabytes (or to no valid NAR) would fill the
//!   client's store first. A blob that is a zstd NAR ([`Blob::nar`]) is decoded
//!   (by [`crate::bundle::decode`]'s decoder: windows of at most 8 MiB) and parsed
//!   and hashed ([`NarChecker`], limited to the declared NAR size) as it is served,
//!   each chunk before it is sent: a client never receives a chunk that decodes
//!   past the declared size or into an invalid NAR, nor the last chunk of a NAR
//!   whose hash or size is not the declared one. (Nix compares the hash itself
//!   before it registers a path; the server does not rely on any client doing so.
//!   docs/benchmarks.md has what the hash costs.)
//! - **`Range`** (RFC 9110 section 14) on blobs a site allows it for: one range
//!   (`bytes=A-B`, `bytes=A-`, `bytes=-N`) gives `206` with `Content-Range`, one that
//!   cannot be satisfied or is malformed gives `416` with `Content-Range: bytes */SIZE`
//!   (as Go's `http.ServeContent` answers); several ranges, or a unit other than
//!   bytes, are ignored and the whole blob is sent, as the RFC allows.
//! - **Bounded resources.** At most [`Config::max_connections`] connections at once
//!   (more wait in the kernel's backlog); a request head must arrive within
//!   [`Config::header_timeout`] (which is also how long an idle keep-alive connection
//!   is kept) and within 16 KiB; a response the client stops reading is dropped
//!   after [`Config::stall_timeout`] without progress; request bodies are never
//!   read. Memory does not grow with blob size: a response holds one chunk
//!   ([`CHUNK`]) at a time, read and hashed on tokio's blocking pool so that a slow
//!   client holds a buffer, not a thread.
//! - **A log line per request** (time, client, method, path, status, body bytes sent,
//!   duration) when [`Config::log`] is set, written when the response ends.
//!
//! HEAD gets the headers of GET with no body. HTTP/2 is not offered (ALPN says
//! `http/1.1`): registry clients and Nix speak HTTP/1.1 to a server that offers
//! nothing else, and one protocol keeps the limits above simple.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use hyper::{HeaderMap, Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::bundle::decode::zstd_writer;
use crate::bundle::digest::{lower_hex, Digest, Hasher};
use crate::bundle::manifest::ContentInfo;
use crate::bundle::reader::{RangeReader, ReadAt};
use crate::nixfmt::NarChecker;

/// What blobs are read from: a bundle source, shared with the connections.
pub type Served = Arc<dyn ReadAt + Send>;

/// Bytes read from a source, hashed and sent at a time: one read on the blocking
/// pool each. Against 128 KiB it saves a tenth of the server's CPU beyond the
/// hashing itself, at 52 MiB of peak RSS for 16 clients pulling at once
/// (scripts/bench-serve).
pub const CHUNK: usize = 256 << 10;
/// Longest request head (request line and headers) read from a client.
const MAX_HEAD: usize = 16 << 10;
/// Largest read buffer of a connection (hyper's minimum is 8 KiB).
const MAX_BUFFER: usize = 64 << 10;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound (in use, not this host's, not allowed).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
    /// A TLS certificate or key file could not be read or holds no usable PEM.
    #[error("cannot use {} as the TLS {what}: {why}", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// `certificate` or `key`.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the certificate and key together.
    #[error("the TLS certificate {} and key {} do not make a server configuration: {why}", cert.display(), key.display())]
    Tls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        why: String,
    },
    /// The runtime or its threads could not be started.
    #[error("cannot start the server's threads: {0}")]
    Runtime(io::Error),
}

impl crate::error::Classify for ServeError {
    /// TLS files that cannot be used are bad input (exit code 4); an address that
    /// cannot be bound, or threads that cannot be started, the machine's trouble.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        use crate::error::ErrorClass;
        Some(match self {
            ServeError::TlsFile { .. } | ServeError::Tls { .. } => ErrorClass::Input,
            ServeError::Bind { .. } | ServeError::Runtime(_) => ErrorClass::Other,
        })
    }
}

/// A byte range of a source that must hash to `digest`.
#[derive(Clone)]
pub struct Blob {
    /// Where the bytes are.
    pub source: Served,
    /// Where the range starts in the source.
    pub offset: u64,
    /// Its length.
    pub size: u64,
    /// The sha256 of its bytes.
    pub digest: Digest,
    /// When the bytes are a zstd-compressed NAR: the NAR's sha256 and size, which
    /// what they decode to must be (checked as they are served, see the module
    /// documentation).
    pub nar: Option<ContentInfo>,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("offset", &self.offset)
            .field("size", &self.size)
            .field("digest", &self.digest)
            .finish()
    }
}

impl Blob {
    /// Which blob of which source this is: what a recorded failure is keyed by.
    fn key(&self) -> (usize, u64) {
        (Arc::as_ptr(&self.source) as *const () as usize, self.offset)
    }
}

/// The body of a [`Reply`].
#[derive(Debug, Clone)]
pub enum Body {
    /// No body (`Content-Length: 0`).
    Empty,
    /// Bytes held in memory (small documents).
    Bytes(Bytes),
    /// A blob, read and checked as it is sent.
    Blob(Blob),
}

/// What a site answers to a request. HEAD is answered with GET's headers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Headers beside `Content-Length` (and, for ranges, `Content-Range`), which the
    /// server sets.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Body,
    /// Whether a `Range` header is honoured (blobs only).
    pub ranges: bool,
}

impl Reply {
    /// A reply with no headers of its own.
    pub fn new(status: u16, body: Body) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
            ranges: false,
        }
    }

    /// A text document.
    pub fn text(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply::new(status, Body::Bytes(body.into())).header("Content-Type", content_type)
    }

    /// This reply with one more header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// The value of the header `name` (ASCII case ignored), if the reply sets it.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A request as a site sees it.
pub struct Request<'a> {
    /// `GET`, `HEAD`, …
    pub method: &'a str,
    /// The path, as sent (not percent-decoded).
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
    headers: &'a HeaderMap,
}

impl Request<'_> {
    /// A header's value, when it is present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header (a header given several times, like `Accept`).
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
}

/// What is served: a reply for each request.
pub trait Site: Send + Sync + 'static {
    /// The reply to `req`. Called on the server's threads; must not block.
    fn reply(&self, req: &Request<'_>) -> Reply;

    /// The reply to a request whose reply is `blob`, which was found changed (or
    /// unreadable) on an earlier request: by default `410 Gone`.
    fn gone(&self, req: &Request<'_>, blob: &Blob) -> Reply {
        let _ = (req, blob);
        Reply::text(
            410,
            "text/plain; charset=utf-8",
            "this document changed on disk after it verified\n",
        )
    }
}

/// Why a blob was cut short as it was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Its bytes had this digest, not the verified one: the file changed.
    Changed(Digest),
    /// Its bytes could not be read (the message says why).
    Unreadable(String),
    /// Its bytes are the verified ones, but what they decode to is not the declared
    /// NAR (the message says why): the bundle was made wrong.
    Content(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Changed(d) => write!(f, "its bytes now hash to {d}"),
            Fault::Unreadable(why) => write!(f, "it could not be read: {why}"),
            Fault::Content(why) => write!(f, "it is not the NAR it is signed as: {why}"),
        }
    }
}

/// A blob that was cut short as it was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The request path that asked for it.
    pub path: String,
    /// The digest it must have.
    pub expected: Digest,
    /// Where it is in its source.
    pub offset: u64,
    /// What was wrong.
    pub found: Fault,
}

/// Something the server has to say: a line of the request log, or a blob cut short.
pub type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// How the server listens and what it tells.
#[derive(Clone)]
pub struct Config {
    /// The address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// TLS, or plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a request head may take to arrive, and an idle connection is kept.
    pub header_timeout: Duration,
    /// How long a response may wait for the client to read before it is dropped.
    pub stall_timeout: Duration,
    /// Where request log lines go; `None` keeps quiet.
    pub log: Option<Sink>,
    /// Where blobs cut short are reported as they happen (besides
    /// [`Server::failures`]).
    pub faults: Option<Sink>,
}

impl Config {
    /// Plain HTTP on `listen`, at most 256 connections, 30 s for a request head (and
    /// of idleness), 60 s for a stalled response, no log.
    pub fn new(listen: SocketAddr) -> Config {
        Config {
            listen,
            tls: None,
            max_connections: 256,
            header_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            log: None,
            faults: None,
        }
    }

    /// A loopback port chosen by the system, for one local client.
    pub fn loopback() -> Config {
        Config::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }
}

/// The TLS configuration for a certificate chain and its key (PEM files): TLS 1.2 and
/// 1.3 by rustls with ring, ALPN `http/1.1`.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let file_err = |path: &Path, what, why: String| ServeError::TlsFile {
        path: path.to_path_buf(),
        what,
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| file_err(cert, "certificate", e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(
            cert,
            "certificate",
            "it holds no PEM CERTIFICATE block".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        file_err(
            key,
            "key",
            format!("{e} (expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"),
        )
    })?;
    let tls_err = |why: String| ServeError::Tls {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        why,
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, private)
    .map_err(|e| tls_err(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

struct Shared {
    site: Box<dyn Site>,
    log: Option<Sink>,
    faults: Option<Sink>,
    /// Blobs found changed, by [`Blob::key`]: refused from then on.
    gone: Mutex<BTreeSet<(usize, u64)>>,
    failures: Mutex<Vec<Mismatch>>,
    /// Blob responses being sent or, after their client left, checked to their end
    /// ([`InFlight`]); [`Server::finish`] waits for none.
    in_flight: Mutex<usize>,
    settled: Condvar,
    /// Body bytes handed to clients so far ([`Server::served`]).
    served: Arc<AtomicU64>,
}

impl Shared {
    fn record(&self, blob: &Blob, path: &str, found: Fault) {
        let m = Mismatch {
            path: path.to_string(),
            expected: blob.digest,
            offset: blob.offset,
            found,
        };
        if let Some(f) = &self.faults {
            let why = match &m.found {
                Fault::Content(_) => "the bundle was made wrong",
                _ => "it changed on disk after it verified",
            };
            f(&format!(
                "{} (blob {}) was cut short: {}; {why}, and it is refused from now on",
                m.path, m.expected, m.found
            ));
        }
        lock(&self.gone).insert(blob.key());
        lock(&self.failures).push(m);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One blob response, from its first byte until it was checked to its end (after
/// its client left, too). It holds its connection's slot: a client that asks for
/// blobs and leaves at once cannot pile up checks beyond the connection limit.
struct InFlight {
    shared: Arc<Shared>,
    _slot: Arc<OwnedSemaphorePermit>,
}

impl InFlight {
    fn new(shared: &Arc<Shared>, slot: &Arc<OwnedSemaphorePermit>) -> InFlight {
        *lock(&shared.in_flight) += 1;
        InFlight {
            shared: shared.clone(),
            _slot: slot.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut n = lock(&self.shared.in_flight);
        *n = n.saturating_sub(1);
        self.shared.settled.notify_all();
    }
}

/// A running server; stopped when dropped.
pub struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: bool,
    stall_timeout: Duration,
    runtime: Option<tokio::runtime::Runtime>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `config.listen` and serves `site` there on threads of its own until
    /// dropped (or, with [`Server::run`], for good).
    pub fn start(config: Config, site: impl Site) -> Result<Server, ServeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(crate::pool::cores().clamp(1, 4))
            .max_blocking_threads(64)
            .thread_name("serve")
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let listener = runtime
            .block_on(async { TcpListener::bind(config.listen).await })
            .map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            site: Box::new(site),
            log: config.log.clone(),
            faults: config.faults.clone(),
            gone: Mutex::new(BTreeSet::new()),
            failures: Mutex::new(Vec::new()),
            in_flight: Mutex::new(0),
            settled: Condvar::new(),
            served: Arc::new(AtomicU64::new(0)),
        });
        let tls = config.tls.is_some();
        let stall_timeout = config.stall_timeout;
        let acceptor = runtime.spawn(accept_loop(listener, config, shared.clone()));
        Ok(Server {
            shared,
            addr,
            tls,
            stall_timeout,
            runtime: Some(runtime),
            acceptor: Some(acceptor),
        })
    }

    /// The address it listens on (the port chosen, for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Body bytes handed to clients so far: what a progress bar of an import
    /// shows while Nix, which names a path only when it starts it, reads them.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// The blobs cut short so far.
    pub fn failures(&self) -> Vec<Mismatch> {
        lock(&self.shared.failures).clone()
    }

    /// Once the clients are done (the one `nix copy` of an import exited): waits
    /// until every blob response has ended and been checked to its end, then stops
    /// the server and gives the blobs cut short. A client that went away mid-blob
    /// (a Nix that failed on its own, a full store disk) may have been sent changed
    /// bytes, or may have failed for its own reasons: the rest of such a blob is
    /// still read and checked, and it is recorded only if it is not the verified
    /// blob, so that a client's own failure is not reported as a changed file, nor
    /// a changed file as the client's failure. The wait is bounded: a response
    /// whose client neither reads nor closes is dropped after the stall timeout.
    pub fn finish(self) -> Vec<Mismatch> {
        let deadline = Instant::now() + self.stall_timeout + Duration::from_secs(5);
        let mut n = lock(&self.shared.in_flight);
        while *n > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            n = self
                .shared
                .settled
                .wait_timeout(n, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(n);
        self.failures()
    }

    /// Serves until the process ends.
    pub fn run(mut self) -> io::Result<()> {
        let (Some(rt), Some(acceptor)) = (self.runtime.as_ref(), self.acceptor.take()) else {
            return Ok(());
        };
        rt.block_on(acceptor)
            .map_err(|e| io::Error::other(format!("the server stopped: {e}")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Ends the listener and every connection; a read on the blocking pool
            // finishes on its own.
            rt.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, config: Config, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let slot = Arc::new(permit);
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        let (header_timeout, stall) = (config.header_timeout, config.stall_timeout);
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    connection(stream, peer, shared, slot, header_timeout, stall).await;
                }
                None => connection(tcp, peer, shared, slot, header_timeout, stall).await,
            }
        });
    }
}

async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    slot: Arc<OwnedSemaphorePermit>,
    header_timeout: Duration,
    stall: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Guarded::new(stream, stall));
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let slot = slot.clone();
        async move { Ok::<_, Infallible>(respond(&shared, &slot, req, peer)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_BUFFER)
        .max_header_size(MAX_HEAD)
        .title_case_headers(true)
        .serve_connection(io, service)
        .await;
}

/// A stream whose writes fail once they have made no progress for `limit`: a client
/// that stops reading a response gives its connection up.
struct Guarded<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Guarded<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Guarded {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After a write returned `Pending`: an error once it has been pending too long.
    fn check_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.check_stall(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.check_stall(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.check_stall(cx).map_ok(|_| ()),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a `Range` header asks of a blob of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsked {
    /// The whole blob (no header, several ranges, or a unit other than bytes).
    Whole,
    /// Bytes `start..end` (end exclusive).
    Part(u64, u64),
    /// Nothing that can be sent: `416`.
    Unsatisfiable,
}

/// Reads a `Range` header value against a blob of `size` bytes.
pub fn range_asked(value: Option<&str>, size: u64) -> RangeAsked {
    let Some(v) = value else {
        return RangeAsked::Whole;
    };
    let Some((unit, spec)) = v.trim().split_once('=') else {
        return RangeAsked::Unsatisfiable;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeAsked::Whole;
    }
    if spec.contains(',') {
        return RangeAsked::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsked::Unsatisfiable;
    };
    let num = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (a.trim().is_empty(), num(a), num(b)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) if n > 0 && size > 0 => RangeAsked::Part(size - n.min(size), size),
        (false, Some(start), None) if b.trim().is_empty() && start < size => {
            RangeAsked::Part(start, size)
        }
        (false, Some(start), Some(last)) if start <= last && start < size => {
            RangeAsked::Part(start, last.saturating_add(1).min(size))
        }
        _ => RangeAsked::Unsatisfiable,
    }
}

fn respond(
    shared: &Arc<Shared>,
    slot: &Arc<OwnedSemaphorePermit>,
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
) -> Response<Outgoing> {
    let started = Instant::now();
    let (parts, _body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let request = Request {
        method: parts.method.as_str(),
        path: &path,
        query: query.as_deref(),
        headers: &parts.headers,
    };
    let mut reply = shared.site.reply(&request);
    if let Body::Blob(b) = &reply.body {
        if lock(&shared.gone).contains(&b.key()) {
            let b = b.clone();
            reply = shared.site.gone(&request, &b);
        }
    }
    let head = parts.method == Method::HEAD;
    let mut status = reply.status;
    let mut extra: Vec<(HeaderName, String)> = Vec::new();
    let (length, inner) = match reply.body {
        Body::Empty => (0, Inner::Done),
        Body::Bytes(b) => (
            b.len() as u64,
            if head {
                Inner::Done
            } else {
                Inner::Bytes(Some(b))
            },
        ),
        Body::Blob(blob) => {
            let asked = match reply.ranges {
                true => range_asked(request.header(RANGE.as_str()), blob.size),
                false => RangeAsked::Whole,
            };
            let (from, to) = match asked {
                RangeAsked::Whole => (0, blob.size),
                RangeAsked::Part(a, b) => {
                    status = 206;
                    extra.push((CONTENT_RANGE, format!("bytes {a}-{}/{}", b - 1, blob.size)));
                    (a, b)
                }
                RangeAsked::Unsatisfiable => {
                    status = 416;
                    extra.push((CONTENT_RANGE, format!("bytes */{}", blob.size)));
                    (0, 0)
                }
            };
            let inner = if head || from == to {
                Inner::Done
            } else {
                let (nar, wrong) = match blob.nar.as_ref().map(NarCheck::new) {
                    None => (None, None),
                    Some(Ok(n)) => (Some(n), None),
                    Some(Err(why)) => (None, Some(why)),
                };
                Inner::Checked(Box::new(Checked {
                    shared: shared.clone(),
                    path: path.clone(),
                    flight: Some(InFlight::new(shared, slot)),
                    job: None,
                    state: Some(Reading {
                        nar,
                        wrong,
                        blob,
                        pos: 0,
                        from,
                        to,
                        hasher: Hasher::new(),
                    }),
                }))
            };
            (to - from, inner)
        }
    };
    let mut response = Response::new(Outgoing {
        inner,
        remaining: if head { 0 } else { length },
        sent: 0,
        served: shared.served.clone(),
        failed: false,
        log: shared.log.clone().map(|sink| LogLine {
            sink,
            peer,
            method: parts.method.to_string(),
            target: match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            },
            status,
            started,
        }),
    });
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in &reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(*name),
            HeaderValue::try_from(value.as_str()),
        ) {
            if n != CONTENT_LENGTH && n != CONTENT_RANGE {
                headers.append(n, v);
            }
        }
    }
    for (n, v) in extra {
        if let Ok(v) = HeaderValue::try_from(v) {
            headers.insert(n, v);
        }
    }
    if status == 416 {
        headers.remove(CONTENT_TYPE);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// A response body: what it sends, counted, and its log line written when it ends.
pub struct Outgoing {
    inner: Inner,
    /// Bytes still to send (what `Content-Length` promises).
    remaining: u64,
    sent: u64,
    /// The server's count of body bytes handed out ([`Server::served`]).
    served: Arc<AtomicU64>,
    /// Whether the body was cut short because a check failed.
    failed: bool,
    log: Option<LogLine>,
}

enum Inner {
    Done,
    Bytes(Option<Bytes>),
    Checked(Box<Checked>),
}

struct LogLine {
    sink: Sink,
    peer: SocketAddr,
    method: String,
    target: String,
    status: u16,
    started: Instant,
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if let Some(l) = &self.log {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let cut = match (self.remaining > 0, self.failed) {
                (false, _) => "",
                (true, true) => " (cut short: a check failed)",
                (true, false) => " (cut short: the client went away)",
            };
            (l.sink)(&format!(
                "{} {} {} {} {} {} {:.1}ms{cut}",
                crate::time::rfc3339(now),
                l.peer,
                l.method,
                l.target,
                l.status,
                self.sent,
                l.started.elapsed().as_secs_f64() * 1000.0
            ));
        }
    }
}

impl HttpBody for Outgoing {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Done => Poll::Ready(None),
            Inner::Bytes(b) => Poll::Ready(b.take().map(Ok)),
            Inner::Checked(c) => c.poll_next(cx),
        };
        if let Poll::Ready(Some(Ok(b))) = &polled {
            this.sent += b.len() as u64;
            this.served.fetch_add(b.len() as u64, Ordering::Relaxed);
            this.remaining = this.remaining.saturating_sub(b.len() as u64);
        }
        if let Poll::Ready(Some(Err(_))) = &polled {
            this.failed = true;
        }
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            this.inner = Inner::Done;
        }
        polled.map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.inner, Inner::Done) || self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A blob being sent: `to - from` bytes of it, all of it hashed.
struct Checked {
    shared: Arc<Shared>,
    path: String,
    /// Until the blob was checked to its end.
    flight: Option<InFlight>,
    job: Option<JoinHandle<Piece>>,
    /// `None` while a job reads, and once the last piece was handed out.
    state: Option<Reading>,
}

impl Drop for Checked {
    /// A response dropped before its end (its client went away, or stopped reading):
    /// the rest of the blob is still read and checked, on the blocking pool, and a
    /// blob that is not the verified one recorded (see [`Server::finish`]).
    fn drop(&mut self) {
        let (job, state) = (self.job.take(), self.state.take());
        if job.is_none() && state.is_none() {
            return; // ended, or cut short and recorded
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // the server is being stopped
        };
        let (shared, path, flight) = (self.shared.clone(), self.path.clone(), self.flight.take());
        rt.spawn(async move {
            let state = match (job, state) {
                (Some(job), _) => match job.await {
                    Ok(Ok((state, _, false))) => state,
                    Ok(Err(failed)) => {
                        let (fault, blob) = *failed;
                        shared.record(&blob, &path, fault);
                        return drop(flight);
                    }
                    // The piece that ended it (checked), or the server stopping.
                    Ok(Ok((_, _, true))) | Err(_) => return drop(flight),
                },
                (None, Some(state)) => state,
                (None, None) => return drop(flight),
            };
            let drained = tokio::task::spawn_blocking(move || {
                let mut r = state;
                let verdict = r.rest().and_then(|()| r.verdict());
                verdict.err().map(|fault| (fault, r.blob))
            })
            .await;
            if let Ok(Some((fault, blob))) = drained {
                shared.record(&blob, &path, fault);
            }
            drop(flight);
        });
    }
}

struct Reading {
    blob: Blob,
    /// Bytes of the blob read and hashed so far.
    pos: u64,
    from: u64,
    to: u64,
    hasher: Hasher,
    /// For a NAR: its decoder and parser, until it is found wrong.
    nar: Option<NarCheck>,
    /// Why the NAR is not the declared one, once found.
    wrong: Option<String>,
}

impl Checked {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.job.is_none() {
            let Some(state) = self.state.take() else {
                return Poll::Ready(None);
            };
            self.job = Some(tokio::task::spawn_blocking(move || next_piece(state)));
        }
        let job = self.job.as_mut().expect("just set");
        let done = match Pin::new(job).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(done) => done,
        };
        self.job = None;
        match done {
            Ok(Ok((state, bytes, last))) => {
                if !last {
                    self.state = Some(state);
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Ok(Err(failed)) => {
                let (fault, blob) = *failed;
                self.shared.record(&blob, &self.path, fault.clone());
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("blob {} cut short: {fault}", blob.digest),
                ))))
            }
            Err(e) => Poll::Ready(Some(Err(io::Error::other(e.to_string())))),
        }
    }
}

/// What one read on the blocking pool gives: the state to go on from, the bytes to
/// send and whether they end the response; or what was wrong, and with which blob.
type Piece = Result<(Reading, Bytes, bool), Box<(Fault, Blob)>>;

/// Reads and hashes the blob from where `r` stands until it has bytes of the range
/// to send. The piece that ends the range is only handed out once the rest of the
/// blob, to its last byte, hashed to the blob's digest (and, for a NAR, decoded to
/// exactly the declared NAR); once a NAR is found wrong nothing more is sent.
fn next_piece(mut r: Reading) -> Piece {
    loop {
        let (start, chunk) = match r.advance() {
            Ok(c) => c,
            Err(f) => return Err(Box::new((f, r.blob))),
        };
        let end = start + chunk.len() as u64;
        let (a, b) = (r.from.max(start), r.to.min(end));
        if a >= b && r.wrong.is_none() {
            continue; // before the range: checked, not sent
        }
        if b < r.to && r.wrong.is_none() {
            let piece = Bytes::from(chunk).slice((a - start) as usize..(b - start) as usize);
            return Ok((r, piece, false));
        }
        // The last piece, or a NAR found wrong: the whole blob is read to its end
        // first, to send the piece only if everything checks, or to tell a file that
        // changed (which decodes to garbage too) from a NAR made wrong.
        if let Err(f) = r.rest().and_then(|()| r.verdict()) {
            return Err(Box::new((f, r.blob)));
        }
        let piece = Bytes::from(chunk).slice((a - start) as usize..(b - start) as usize);
        return Ok((r, piece, true));
    }
}

impl Reading {
    /// Reads the next chunk, hashes it and (for a NAR not found wrong yet) decodes
    /// and parses it; gives where it starts in the blob, and its bytes.
    fn advance(&mut self) -> Result<(u64, Vec<u8>), Fault> {
        let want = (self.blob.size - self.pos).min(CHUNK as u64) as usize;
        let mut chunk = vec![0u8; want];
        let at = self.blob.offset + self.pos;
        RangeReader::new(&*self.blob.source, at, want as u64)
            .read_exact(&mut chunk)
            .map_err(|e| Fault::Unreadable(format!("reading the bundle at offset {at}: {e}")))?;
        self.hasher.update(&chunk);
        if self.wrong.is_none() {
            if let Some(n) = self.nar.as_mut() {
                self.wrong = n.feed(&chunk).err();
            }
        }
        let start = self.pos;
        self.pos += want as u64;
        Ok((start, chunk))
    }

    /// Reads (and checks) the rest of the blob.
    fn rest(&mut self) -> Result<(), Fault> {
        while self.pos < self.blob.size {
            self.advance()?;
        }
        Ok(())
    }

    /// After the last byte: the digest, then the NAR it decodes to.
    fn verdict(&mut self) -> Result<(), Fault> {
        let (found, _) = std::mem::take(&mut self.hasher).finish();
        if found != self.blob.digest {
            return Err(Fault::Changed(found));
        }
        if let Some(why) = self.wrong.take() {
            return Err(Fault::Content(why));
        }
        match self.nar.take() {
            Some(n) => n.finish().map_err(Fault::Content),
            None => Ok(()),
        }
    }
}

/// A zstd NAR decoded and parsed chunk by chunk as it is served.
struct NarCheck {
    decoder: zstd::stream::write::Decoder<'static, NarChecker>,
    content: ContentInfo,
}

impl NarCheck {
    fn new(content: &ContentInfo) -> Result<NarCheck, String> {
        // The one bounded decoder (windows of at most 8 MiB, `bundle::decode`).
        let decoder = zstd_writer(NarChecker::with_limit(content.size))
            .map_err(|e| format!("cannot start a zstd decoder: {e}"))?;
        Ok(NarCheck {
            decoder,
            content: content.clone(),
        })
    }

    /// The next compressed bytes: everything they decode to has been parsed when this
    /// returns `Ok`.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        use std::io::Write;
        self.decoder
            .write_all(chunk)
            .and_then(|()| self.decoder.flush())
            .map_err(|e| match e.get_ref() {
                Some(inner) => inner.to_string(),
                None => format!("it is not valid zstd: {e}"),
            })
    }

    /// After the last byte: a whole NAR, exactly the declared one.
    fn finish(self) -> Result<(), String> {
        let summary = self
            .decoder
            .into_inner()
            .finish()
            .map_err(|e| e.to_string())?;
        if summary.digest != self.content.digest || summary.size != self.content.size {
            return Err(format!(
                "it decompresses to a NAR of {} bytes with sha256 {}, not the declared {} bytes with sha256 {}",
                summary.size, summary.digest, self.content.size, self.content.digest
            ));
        }
        Ok(())
    }
}

/// A fixed set of documents under a random path prefix: what the Nix import serves
/// to one `nix copy` on a loopback port. The prefix keeps any client cache from
/// mistaking one run's documents for another's.
pub struct Documents {
    prefix: String,
    docs: BTreeMap<String, Document>,
}

/// One of the [`Documents`].
#[derive(Debug, Clone)]
pub enum Document {
    /// Bytes held in memory, with their media type.
    Text(Bytes, &'static str),
    /// A blob (`Range: bytes=N-` resumes it).
    Blob(Blob),
}

impl Documents {
    /// `docs` (names without a leading `/`) under a fresh random prefix.
    pub fn new(docs: BTreeMap<String, Document>) -> io::Result<Documents> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let prefix = lower_hex(&nonce);
        Ok(Documents {
            prefix: format!("/{prefix}"),
            docs,
        })
    }

    /// The path prefix, `/` and 24 hex digits: a server's URL plus this is the base
    /// URL of the documents.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Site for Documents {
    fn reply(&self, req: &Request<'_>) -> Reply {
        if req.method != "GET" && req.method != "HEAD" {
            return Reply::new(405, Body::Empty).header("Allow", "GET, HEAD");
        }
        let found = req
            .path
            .strip_prefix(self.prefix.as_str())
            .and_then(|p| p.strip_prefix('/'))
            .and_then(|name| self.docs.get(name));
        match found {
            None => Reply::new(404, Body::Empty),
            Some(Document::Text(body, content_type)) => {
                Reply::text(200, content_type, body.clone())
            }
            Some(Document::Blob(blob)) => Reply {
                ranges: true,
                ..Reply::new(200, Body::Blob(blob.clone()))
                    .header("Content-Type", "application/octet-stream")
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream as StdTcp;

    /// A server of one text document and one blob (a range of a temp file that must
    /// hash to `digest`).
    fn site(
        data: &[u8],
        digest: Digest,
        config: Config,
    ) -> (Server, String, tempfile::NamedTempFile) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(data).unwrap();
        let source: Served = Arc::new(f.reopen().unwrap());
        let mut docs = BTreeMap::new();
        docs.insert(
            "info".to_string(),
            Document::Text(Bytes::from_static(b"hello\n"), "text/plain"),
        );
        docs.insert(
            "nar/x.nar.zst".to_string(),
            Document::Blob(Blob {
                source,
                offset: 3,
                size: data.len() as u64 - 3,
                digest,
                nar: None,
            }),
        );
        let docs = Documents::new(docs).unwrap();
        let prefix = docs.prefix().to_string();
        (Server::start(config, docs).unwrap(), prefix, f)
    }

    /// One parsed response.
    struct Got {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl std::fmt::Debug for Got {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "{} {:?} ({} body bytes)",
                self.status,
                self.headers,
                self.body.len()
            )
        }
    }

    impl Got {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Sends raw requests on one connection, then parses every response the server
    /// sent until it closed the connection (`heads`: which requests were HEAD). The
    /// last request asks for the connection to be closed, or the server closes it.
    fn exchange(s: &Server, requests: &str, heads: &[bool]) -> (Vec<Got>, Vec<u8>) {
        let mut c = StdTcp::connect(s.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(requests.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = c.read_to_end(&mut raw);
        let mut out = Vec::new();
        let mut rest = &raw[..];
        for &head in heads {
            let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
                break;
            };
            let text = String::from_utf8_lossy(&rest[..end]).into_owned();
            let mut lines = text.split("\r\n");
            let status = lines
                .next()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(": "))
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            rest = &rest[end + 4..];
            let take = if head { 0 } else { len.min(rest.len()) };
            out.push(Got {
                status,
                headers,
                body: rest[..take].to_vec(),
            });
            rest = &rest[take..];
        }
        (out, raw)
    }

    #[test]
    fn serves_text_blobs_and_ranges_on_one_connection() {
        let data: Vec<u8> = (0..(3 * CHUNK as u32 + 10)).map(|i| i as u8).collect();
        let (s, p, _f) = site(&data, Digest::of(&data[3..]), Config::loopback());
        let n = data.len() - 3;
        let (got, _) = exchange(
            &s,
            &format!(
                "GET {p}/info HTTP/1.1\r\nHost: x\r\n\r\n\
                 HEAD {p}/info HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET {p}/nar/x.nar.zst HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET {p}/nar/x.nar.zst HTTP/1.1\r\nHost: x\r\nRange: bytes=5-\r\n\r\n\
                 GET {p}/nar/x.nar.zst HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\n\r\n\
                 GET {p}/nar/x.nar.zst HTTP/1.1\r\nHost: x\r\nRange: bytes={n}-\r\n\r\n\
                 HEAD {p}/nar/x.nar.zst HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET {p}/missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ),
            &[false, true, false, false, false, false, true, false],
        );
        assert_eq!(got.len(), 8, "{got:?}");
        assert_eq!((got[0].status, &got[0].body[..]), (200, &b"hello\n"[..]));
        assert_eq!(got[0].header("content-type"), Some("text/plain"));
        assert_eq!(
            (got[1].status, got[1].header("content-length")),
            (200, Some("6"))
        );
        assert!(got[1].body.is_empty());
        assert_eq!(got[2].status, 200);
        assert!(got[2].body == data[3..], "the whole blob");
        assert_eq!(got[3].status, 206);
        assert_eq!(
            got[3].header("content-range"),
            Some(format!("bytes 5-{}/{n}", n - 1).as_str())
        );
        assert!(got[3].body == data[8..]);
        assert_eq!(got[4].status, 206);
        assert_eq!(got[4].body, &data[4..6]);
        assert_eq!(got[5].status, 416);
        assert_eq!(
            got[5].header("content-range"),
            Some(format!("bytes */{n}").as_str())
        );
        assert_eq!(
            got[6].header("content-length"),
            Some(n.to_string().as_str())
        );
        assert_eq!(got[7].status, 404);
        assert!(s.failures().is_empty());
    }

    #[test]
    fn a_blob_that_changed_is_cut_short_and_then_gone() {
        let data: Vec<u8> = (0..(2 * CHUNK as u32 + 100))
            .map(|i| (i * 7) as u8)
            .collect();
        let wrong = Digest::of(b"not these bytes");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let (l1, l2) = (lines.clone(), lines.clone());
        let mut config = Config::loopback();
        config.log = Some(Arc::new(move |l: &str| lock(&l1).push(format!("log {l}"))));
        config.faults = Some(Arc::new(move |l: &str| {
            lock(&l2).push(format!("fault {l}"))
        }));
        let (s, p, _f) = site(&data, wrong, config);
        let (got, _) = exchange(
            &s,
            &format!("GET {p}/nar/x.nar.zst HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            &[false],
        );
        // Everything but the last chunk arrived, and the connection was closed.
        assert_eq!(got[0].status, 200);
        assert_eq!(got[0].body.len(), 2 * CHUNK);
        assert!(got[0].body == data[3..3 + 2 * CHUNK]);
        let f = s.failures();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].path, format!("{p}/nar/x.nar.zst"));
        assert_eq!(f[0].expected, wrong);
        assert_eq!(f[0].found, Fault::Changed(Digest::of(&data[3..])));
        // A range of its first bytes is cut short too: the last piece waits for the
        // whole blob's digest. And from now on it is gone.
        let (again, _) = exchange(
            &s,
            &format!("GET {p}/nar/x.nar.zst HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            &[false],
        );
        assert_eq!(again[0].status, 410);
        let lines = lock(&lines).clone();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("fault ") && l.contains("cut short")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("log ")
                && l.contains(" GET ")
                && l.contains(" 200 ")
                && l.ends_with("(cut short: a check failed)")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("log ") && l.contains(" 410 ")),
            "{lines:?}"
        );
    }

    #[test]
    fn a_range_of_a_changed_blob_never_gets_its_last_piece() {
        let data: Vec<u8> = (0..(3 * CHUNK as u32)).map(|i| (i * 3) as u8).collect();
        let (s, p, _f) = site(&data, Digest::of(b"other"), Config::loopback());
        let (got, raw) = exchange(
            &s,
            &format!("GET {p}/nar/x.nar.zst HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\nConnection: close\r\n\r\n"),
            &[false],
        );
        assert_eq!(got[0].status, 206);
        assert!(
            got[0].body.is_empty(),
            "{} bytes of {}",
            got[0].body.len(),
            raw.len()
        );
        assert_eq!(s.failures().len(), 1);
    }

    #[test]
    fn refuses_what_it_does_not_serve_and_slow_clients() {
        let data = b"0123456789";
        let mut config = Config::loopback();
        config.header_timeout = Duration::from_millis(300);
        let (s, p, _f) = site(data, Digest::of(&data[3..]), config);
        // Without the prefix nothing is found.
        let (got, _) = exchange(
            &s,
            "GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &[false],
        );
        assert_eq!(got[0].status, 404);
        let (got, _) = exchange(
            &s,
            &format!("PUT {p}/info HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"),
            &[false],
        );
        assert_eq!(got[0].status, 405);
        let (got, _) = exchange(&s, "garbage\r\n\r\n", &[false]);
        assert_eq!(got[0].status, 400);
        let long = format!(
            "GET {p}/info HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        let (got, _) = exchange(&s, &long, &[false]);
        assert_eq!(got[0].status, 431);
        // A request head that does not arrive in time: the connection is closed.
        let mut c = StdTcp::connect(s.addr()).unwrap();
        c.write_all(b"GET /info HTTP/1.1\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "closed after the header timeout"
        );
        assert!(s.url().starts_with("http://127.0.0.1:"));
    }

    /// One NAR string: its length, its bytes, zero padding to 8 (format.md 14.7).
    fn token(out: &mut Vec<u8>, t: &[u8]) {
        out.extend_from_slice(&(t.len() as u64).to_le_bytes());
        out.extend_from_slice(t);
        out.resize(out.len().div_ceil(8) * 8, 0);
    }

    /// The NAR of one regular file holding `contents` (format.md 14.7).
    fn nar_of(contents: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for t in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"regular",
            b"contents",
        ] {
            token(&mut out, t);
        }
        token(&mut out, contents);
        token(&mut out, b")");
        out
    }

    /// A server of `stored` (zstd bytes) as a NAR that must decode to `nar_digest`
    /// and `nar_size`, with the path to ask for it.
    fn nar_server(
        stored: &[u8],
        nar_digest: Digest,
        nar_size: u64,
    ) -> (Server, String, tempfile::NamedTempFile) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(stored).unwrap();
        let mut docs = BTreeMap::new();
        docs.insert(
            "x.nar.zst".to_string(),
            Document::Blob(Blob {
                source: Arc::new(f.reopen().unwrap()),
                offset: 0,
                size: stored.len() as u64,
                digest: Digest::of(stored),
                nar: Some(ContentInfo {
                    digest: nar_digest,
                    size: nar_size,
                }),
            }),
        );
        let docs = Documents::new(docs).unwrap();
        let path = format!("{}/x.nar.zst", docs.prefix());
        (Server::start(Config::loopback(), docs).unwrap(), path, f)
    }

    /// Serves `stored` as [`nar_server`] does; the response to one GET and the
    /// failures.
    fn serve_nar(stored: &[u8], nar_digest: Digest, nar_size: u64) -> (Got, Vec<Mismatch>) {
        let (s, path, _f) = nar_server(stored, nar_digest, nar_size);
        let (mut got, _) = exchange(
            &s,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            &[false],
        );
        // A check that fails on the first chunk may cut the connection before
        // hyper has written the head: then nothing arrived, a body cut short too.
        let got = if got.is_empty() {
            Got {
                status: 0,
                headers: Vec::new(),
                body: Vec::new(),
            }
        } else {
            got.remove(0)
        };
        // `finish`, not `failures`: the check of a cut response may still be
        // recording when the client has seen the connection close.
        (got, s.finish())
    }

    #[test]
    fn a_nar_is_served_only_as_what_it_is_signed_as() {
        let contents: Vec<u8> = (0..(3 * CHUNK as u32)).map(|i| (i % 251) as u8).collect();
        let nar = nar_of(&contents);
        let zst = zstd::encode_all(&nar[..], 3).unwrap();
        let (got, failures) = serve_nar(&zst, Digest::of(&nar), nar.len() as u64);
        assert_eq!(got.body, zst, "a good NAR goes out whole");
        assert!(failures.is_empty());
        // Declared a byte shorter than it decodes to (a bomb, in small): cut short.
        let (got, failures) = serve_nar(&zst, Digest::of(&nar), nar.len() as u64 - 1);
        assert!(got.body.len() < zst.len());
        assert!(
            matches!(&failures[0].found, Fault::Content(_)),
            "{failures:?}"
        );
        // Valid zstd of bytes that are no NAR: refused although the blob is intact.
        let junk: Vec<u8> = (0..(2 * CHUNK as u32)).map(|i| (i * 13) as u8).collect();
        let zst = zstd::encode_all(&junk[..], 3).unwrap();
        let (got, failures) = serve_nar(&zst, Digest::of(&junk), junk.len() as u64);
        assert!(got.body.len() < zst.len());
        match &failures[0].found {
            Fault::Content(why) => assert!(
                why.contains("nix-archive-1") || why.contains("NAR"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        // The right NAR under a wrong declared hash: its last chunk never goes out.
        let zst = zstd::encode_all(&nar[..], 3).unwrap();
        let (got, failures) = serve_nar(&zst, Digest::of(b"other"), nar.len() as u64);
        assert!(got.body.len() < zst.len());
        assert!(matches!(&failures[0].found, Fault::Content(_)));
    }

    /// Asks for `path`, reads `n` bytes of the response and goes away.
    fn take_and_leave(s: &Server, path: &str, n: usize) {
        let mut c = StdTcp::connect(s.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let mut buf = vec![0u8; n];
        c.read_exact(&mut buf).unwrap();
    }

    /// Regression (ground issue): a Nix that failed on its own (a full store disk)
    /// went away mid-NAR and was reported as a changed file. Now the rest of the
    /// blob is still read and checked: when it is the verified one nothing is
    /// recorded (the client's own error is the one to report); when its bytes
    /// changed, it is recorded though the client left before the change reached it.
    #[test]
    fn a_client_that_goes_away_is_not_a_changed_file() {
        // Far more than the socket buffers hold: the client leaves mid-blob.
        let data: Vec<u8> = (0..(32u32 << 20)).map(|i| (i % 251) as u8).collect();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let l = lines.clone();
        let mut config = Config::loopback();
        config.log = Some(Arc::new(move |line: &str| lock(&l).push(line.to_string())));
        let (s, p, _f) = site(&data, Digest::of(&data[3..]), config);
        take_and_leave(&s, &format!("{p}/nar/x.nar.zst"), 1000);
        assert_eq!(s.finish(), Vec::<Mismatch>::new());
        let lines = lock(&lines).clone();
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with("(cut short: the client went away)")),
            "{lines:?}"
        );
        // The file is not the verified one (its last byte changed): found after the
        // client left, and recorded.
        let mut changed = data.clone();
        *changed.last_mut().unwrap() ^= 1;
        let (s, p, _f) = site(&changed, Digest::of(&data[3..]), Config::loopback());
        take_and_leave(&s, &format!("{p}/nar/x.nar.zst"), 1000);
        let f = s.finish();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].found, Fault::Changed(Digest::of(&changed[3..])));
    }

    #[test]
    fn a_bad_nar_is_recorded_even_when_the_client_went_away() {
        // The verified bytes, a NAR that starts well and ends short of the file it
        // declares: the bundle's fault, whatever the client did. The contents do
        // not compress, so the blob is far larger than the socket buffers and the
        // client leaves mid-blob.
        let mut plain = Vec::new();
        for s in ["nix-archive-1", "(", "type", "regular", "contents"] {
            token(&mut plain, s.as_bytes());
        }
        let len = 16usize << 20;
        plain.extend_from_slice(&(4 * len as u64).to_le_bytes());
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        plain.extend((0..len).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }));
        let data = zstd::encode_all(&plain[..], 1).unwrap();
        assert!(data.len() > len);
        let (s, path, _f) = nar_server(&data, Digest::of(&plain), plain.len() as u64);
        take_and_leave(&s, &path, 1000);
        let f = s.finish();
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(matches!(&f[0].found, Fault::Content(_)), "{f:?}");
    }

    #[test]
    fn a_client_that_stops_reading_gives_its_connection_up() {
        // One connection at a time: a second client is served only once the first,
        // which asked for 16 MiB and reads none of it, has been dropped.
        let data: Vec<u8> = (0..(16u32 << 20)).map(|i| (i >> 8) as u8).collect();
        let mut config = Config::loopback();
        config.max_connections = 1;
        config.stall_timeout = Duration::from_millis(500);
        let (s, p, _f) = site(&data, Digest::of(&data[3..]), config);
        let mut stalled = StdTcp::connect(s.addr()).unwrap();
        stalled
            .write_all(format!("GET {p}/nar/x.nar.zst HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        let (got, _) = exchange(
            &s,
            &format!("GET {p}/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            &[false],
        );
        let waited = started.elapsed();
        assert_eq!(got[0].status, 200);
        assert!(
            waited >= Duration::from_millis(300),
            "served after {waited:?}"
        );
        assert!(waited < Duration::from_secs(10), "served after {waited:?}");
        drop(stalled);
    }

    #[test]
    fn tls_files_that_cannot_be_used_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("cert.pem");
        fs_err::write(&junk, "not a certificate\n").unwrap();
        let key = dir.path().join("key.pem");
        let e = tls_config(&junk, &key).unwrap_err();
        assert!(
            matches!(
                e,
                ServeError::TlsFile {
                    what: "certificate",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("cert.pem"), "{e}");
        let e = tls_config(&dir.path().join("absent.pem"), &key).unwrap_err();
        assert!(e.to_string().contains("absent.pem"), "{e}");
    }

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        use RangeAsked::*;
        assert_eq!(range_asked(None, 10), Whole);
        assert_eq!(range_asked(Some("bytes=0-9"), 10), Part(0, 10));
        assert_eq!(range_asked(Some("bytes=2-"), 10), Part(2, 10));
        assert_eq!(range_asked(Some("bytes=-3"), 10), Part(7, 10));
        assert_eq!(range_asked(Some("bytes=-30"), 10), Part(0, 10));
        assert_eq!(range_asked(Some("bytes=5-1000"), 10), Part(5, 10));
        assert_eq!(range_asked(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(range_asked(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(range_asked(Some("bytes=5-2"), 10), Unsatisfiable);
        assert_eq!(range_asked(Some("bytes=a-b"), 10), Unsatisfiable);
        assert_eq!(range_asked(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(range_asked(Some("bytes=0-1,3-4"), 10), Whole);
        assert_eq!(range_asked(Some("items=0-1"), 10), Whole);
        assert_eq!(range_asked(Some("bytes=+1-2"), 10), Unsatisfiable);
    }
}
