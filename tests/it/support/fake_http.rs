//! Small in-process servers on 127.0.0.1 for the faults a real registry or chart
//! repository cannot be made to produce on demand, which is the only place the
//! project's rules allow a fake: a blob cut off halfway, wrong bytes under the
//! right digest, a 503 once, a bearer-token service in front of the real
//! registry, a chart repository behind basic auth, a connection cut mid-upload.
//!
//! [`FakeHttp`] answers each request with a handler closure the test gives it; a
//! [`Response`] may cut the connection after part of its body. [`CuttingProxy`]
//! forwards bytes unchanged to a real server and cuts one connection part-way
//! through a request body (an HTTP-level fake would have to rewrite `Host` and
//! `Location` and read chunked uploads; a byte relay changes nothing). Both stop
//! accepting connections when dropped.
//!
//! Plain std TCP and threads, one thread per connection: nothing here shares code
//! with gapbundle's HTTP stack.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// One request as a fake server read it.
pub struct Request {
    /// `GET`, `HEAD`, `PUT`, …
    pub method: String,
    /// The request target, query included (`/v2/x/y/blobs/sha256:…`).
    pub path: String,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, `Content-Length` bytes (the fakes take no chunked uploads).
    pub body: Vec<u8>,
    /// The server's own address (`127.0.0.1:PORT`), for answers that name it.
    pub server_addr: String,
}

impl Request {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a handler answers: a status, headers and a body (`Content-Length` is
/// added; a `HEAD` gets no body), optionally cut short.
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut_after: Option<usize>,
}

impl Response {
    /// A response with `status` and `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
            cut_after: None,
        }
    }

    /// Adds the header `name: value`.
    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends the head (with the full `Content-Length`) and only the first `n`
    /// bytes of the body, then drops the connection: a transfer cut halfway.
    pub fn cut_after(mut self, n: usize) -> Response {
        self.cut_after = Some(n);
        self
    }
}

/// An HTTP/1.1 server on a free 127.0.0.1 port that answers every request with
/// its handler. Stops accepting connections when dropped.
pub struct FakeHttp {
    listener: Listener,
}

impl FakeHttp {
    /// One request per connection, each answered with `Connection: close`.
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> FakeHttp {
        Self::serve(handler, false)
    }

    /// Connections stay open for further requests, as a registry's do.
    pub fn keep_alive(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> FakeHttp {
        Self::serve(handler, true)
    }

    fn serve(
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
        keep_alive: bool,
    ) -> FakeHttp {
        let handler = Arc::new(handler);
        let listener = listen(move |conn| {
            let Ok(read_half) = conn.try_clone() else {
                return;
            };
            let Ok(server_addr) = conn.local_addr() else {
                return;
            };
            let mut reader = BufReader::new(read_half);
            let mut conn = conn;
            while let Some(request) = read_request(&mut reader, server_addr.to_string()) {
                let response = handler(&request);
                let sent = write_response(&mut conn, &request.method, &response, keep_alive);
                if !keep_alive || response.cut_after.is_some() || sent.is_err() {
                    break;
                }
            }
        });
        FakeHttp { listener }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.listener.addr
    }
}

/// Reads one request; `None` when the client closed the connection or sent
/// something that is not HTTP/1.1.
fn read_request(reader: &mut BufReader<TcpStream>, server_addr: String) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
        server_addr,
    })
}

fn write_response(
    conn: &mut TcpStream,
    method: &str,
    r: &Response,
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
        r.status,
        reason(r.status),
        r.body.len()
    );
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let body: &[u8] = if method == "HEAD" { &[] } else { &r.body };
    let body = &body[..r.cut_after.unwrap_or(body.len()).min(body.len())];
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()?;
    if r.cut_after.is_some() {
        let _ = conn.shutdown(Shutdown::Both);
    }
    Ok(())
}

/// The reason phrase of the status codes the fakes answer with.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` that forwards every byte
/// unchanged, except that it cuts the first connection whose client-to-server
/// bytes pass `cut_after` (a request body part-way through), once.
pub struct CuttingProxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    cut: Arc<AtomicUsize>,
    _listener: Listener,
}

impl CuttingProxy {
    /// Starts the proxy, armed.
    pub fn start(upstream: &str, cut_after: u64) -> CuttingProxy {
        let armed = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(AtomicUsize::new(0));
        let (c, up) = (cut.clone(), upstream.to_string());
        let listener = listen(move |client| relay(client, &up, cut_after, &armed, &c));
        CuttingProxy {
            addr: listener.addr.clone(),
            cut,
            _listener: listener,
        }
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.cut.load(Ordering::SeqCst)
    }
}

/// Forwards one connection both ways; server-to-client on its own thread.
fn relay(client: TcpStream, upstream: &str, cut_after: u64, armed: &AtomicBool, cut: &AtomicUsize) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (mut from_server, mut to_client) =
        (server.try_clone().unwrap(), client.try_clone().unwrap());
    let back = thread::spawn(move || {
        let _ = io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let (mut from_client, mut to_server) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let mut buf = vec![0u8; 16 << 10];
    let mut total = 0u64;
    loop {
        let n = match from_client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n as u64;
        if total > cut_after && armed.swap(false, Ordering::SeqCst) {
            // Mid-body: close both sides without forwarding this chunk. The client
            // sees its connection reset (or closed) while it is still sending.
            cut.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            break;
        }
        if to_server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Write);
    let _ = back.join();
}

/// A listening socket on a free 127.0.0.1 port whose accept loop hands every
/// connection to `on_connection` on a thread of its own; dropping it stops the
/// loop, so a finished test leaves no port open in the shared test process.
pub(super) struct Listener {
    pub(super) addr: String,
    stop: Arc<AtomicBool>,
}

pub(super) fn listen(on_connection: impl Fn(TcpStream) + Send + Sync + 'static) -> Listener {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for a fake server");
    let addr = listener.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let on_connection = Arc::new(on_connection);
    thread::spawn(move || {
        for conn in listener.incoming() {
            if stopped.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let on_connection = on_connection.clone();
            thread::spawn(move || on_connection(conn));
        }
    });
    Listener { addr, stop }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and closes the socket.
        let _ = TcpStream::connect(&self.addr);
    }
}
