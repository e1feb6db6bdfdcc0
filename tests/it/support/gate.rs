//! A TCP forwarder in front of a real service that stops passing the service's
//! bytes on once a given number of them went through, until it is opened: a kill
//! point in the middle of a download from a real registry that does not depend on
//! timing (a local registry sends a blob of tens of MiB in a few milliseconds).
//! What the clients sent is recorded, for a test to see which requests they made
//! (a `Range` header on a resumed download, say).
//!
//! It changes no byte: a client talks to the real service through it, only later.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use super::fake_http::{listen, Listener};

/// What the gate's connections share.
#[derive(Default)]
struct State {
    /// The service's bytes passed on so far, over every connection.
    passed: u64,
    /// Once set, everything is passed on.
    open: bool,
    /// A connection waits at the limit.
    holding: bool,
    /// Every byte the clients sent, in the order each connection read them.
    sent: Vec<u8>,
}

/// The forwarder; stops accepting connections when dropped.
pub struct Gate {
    listener: Listener,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Gate {
    /// Forwards `127.0.0.1:PORT` (a free port) to `upstream` (`HOST:PORT`), passing
    /// on at most `limit` bytes of the upstream's answers until [`Gate::open`].
    pub fn start(upstream: &str, limit: u64) -> Gate {
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let shared = state.clone();
        let upstream = upstream.to_string();
        let listener = listen(move |client| {
            let Ok(server) = TcpStream::connect(&upstream) else {
                return;
            };
            let (Ok(client_in), Ok(server_out)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let requests = shared.clone();
            // The client's bytes go up as they come, recorded.
            thread::spawn(move || {
                let (mut from, mut to) = (client_in, server_out);
                let mut buf = [0u8; 16 << 10];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    requests.0.lock().unwrap().sent.extend_from_slice(&buf[..n]);
                }
                let _ = to.shutdown(Shutdown::Write);
            });
            // The service's bytes come down up to the limit, then wait.
            let (mut from, mut to) = (server, client);
            let mut buf = [0u8; 16 << 10];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut at = 0;
                while at < n {
                    let (lock, wake) = &*shared;
                    let mut s = lock.lock().unwrap();
                    let room = if s.open {
                        (n - at) as u64
                    } else {
                        limit.saturating_sub(s.passed).min((n - at) as u64)
                    };
                    if room == 0 {
                        s.holding = true;
                        drop(wake.wait_while(s, |s| !s.open).unwrap());
                        continue;
                    }
                    s.passed += room;
                    drop(s);
                    let end = at + room as usize;
                    if to.write_all(&buf[at..end]).is_err() {
                        return;
                    }
                    at = end;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
        Gate { listener, state }
    }

    /// `127.0.0.1:PORT`, to use in place of the service's address.
    pub fn addr(&self) -> &str {
        &self.listener.addr
    }

    /// Whether a connection is waiting at the limit.
    pub fn holding(&self) -> bool {
        self.state.0.lock().unwrap().holding
    }

    /// Passes everything on from now on, the held bytes first.
    pub fn open(&self) {
        let (lock, wake) = &*self.state;
        lock.lock().unwrap().open = true;
        wake.notify_all();
    }

    /// Everything the clients sent so far, as text (the requests' lines and headers;
    /// a body that is not UTF-8 shows as replacement characters).
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.state.0.lock().unwrap().sent).into_owned()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        // Let every connection that waits finish, so no thread waits forever.
        self.open();
    }
}
