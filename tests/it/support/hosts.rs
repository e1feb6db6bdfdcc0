//! A host name for 127.0.0.1 that clients do not treat as loopback.
//!
//! Why: Go's HTTP stack, which Helm uses, never proxies `localhost` or a loopback
//! address, and Helm 3.17 speaks plain HTTP to `127.0.0.1` and `localhost` whatever
//! it is told. A registry reached by those names can therefore show neither Helm
//! going through a proxy nor Helm speaking TLS with a private CA. A name in
//! `/etc/hosts` is an ordinary host to every client: `registry.test` (the `.test`
//! top-level domain is reserved for tests, RFC 2606) resolves to 127.0.0.1, so
//! nothing leaves the machine.
//!
//! `scripts/install-test-deps` adds the line `127.0.0.1 registry.test` to
//! `/etc/hosts`; when the tests run as root on a machine that lacks it they add it
//! themselves (once, appended), otherwise they fail naming the fix.

use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::sync::OnceLock;

use super::INSTALL_HINT;

/// The name, as registry hosts are written (`registry.test:PORT`).
pub const LOOPBACK_NAME: &str = "registry.test";

/// Whether `name` resolves to 127.0.0.1 (and to nothing else).
fn resolves_to_loopback(name: &str) -> bool {
    match (name, 0).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            !addrs.is_empty()
                && addrs
                    .iter()
                    .all(|ip| *ip == IpAddr::V4(Ipv4Addr::LOCALHOST))
        }
        Err(_) => false,
    }
}

/// [`LOOPBACK_NAME`], after making sure it resolves to 127.0.0.1 (see the module
/// docs). Panics with the fix when it does not and cannot be made to.
pub fn loopback_name() -> &'static str {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        if resolves_to_loopback(LOOPBACK_NAME) {
            return;
        }
        let line = format!("127.0.0.1 {LOOPBACK_NAME}\n");
        let hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
        if !hosts.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some("127.0.0.1") && f.any(|n| n == LOOPBACK_NAME)
        }) {
            // One write in append mode: a concurrent run at worst adds a second,
            // identical line.
            let appended = fs::OpenOptions::new()
                .append(true)
                .open("/etc/hosts")
                .and_then(|mut f| {
                    let sep = if hosts.is_empty() || hosts.ends_with('\n') {
                        ""
                    } else {
                        "\n"
                    };
                    f.write_all(format!("{sep}{line}").as_bytes())
                });
            if let Err(e) = appended {
                panic!(
                    "\n\n*** {LOOPBACK_NAME} does not resolve to 127.0.0.1, and /etc/hosts cannot be changed ({e}) ***\n\
                     Add the line `{}` to /etc/hosts, or {INSTALL_HINT}.\n\n",
                    line.trim_end()
                );
            }
        }
        assert!(
            resolves_to_loopback(LOOPBACK_NAME),
            "{LOOPBACK_NAME} still does not resolve to 127.0.0.1 only, with `{}` in /etc/hosts: check /etc/nsswitch.conf (`hosts: files dns`)",
            line.trim_end()
        );
    });
    LOOPBACK_NAME
}
