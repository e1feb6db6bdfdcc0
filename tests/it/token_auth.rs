//! The bearer-token flow (what Docker Hub, GHCR, Harbor use): the registry answers
//! 401 with a `WWW-Authenticate: Bearer realm=...` challenge, the client trades its
//! credentials for a token at the realm, then retries with the token. The real
//! distribution registry only does token auth with a separate JWT-signing token
//! service, so this test puts a small token server of its own in front of the real
//! registry: it issues and checks an opaque token and forwards authorised requests,
//! byte for byte, to the real registry behind it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::support::*;

const TOKEN: &str = "opaque-test-token-1";

struct TokenFront {
    addr: String,
    token_requests: Arc<Mutex<Vec<String>>>,
}

fn start_token_front(backend: String, user: &'static str, pass: &'static str) -> TokenFront {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let token_requests = Arc::new(Mutex::new(Vec::new()));
    let seen = token_requests.clone();
    let me = addr.clone();
    thread::spawn(move || {
        for conn in listener.incoming().take(500) {
            let Ok(conn) = conn else { continue };
            let (backend, seen, me) = (backend.clone(), seen.clone(), me.clone());
            thread::spawn(move || serve(conn, &backend, &me, &seen, user, pass));
        }
    });
    TokenFront {
        addr,
        token_requests,
    }
}

fn serve(
    mut conn: TcpStream,
    backend: &str,
    me: &str,
    seen: &Mutex<Vec<String>>,
    user: &str,
    pass: &str,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let basic = format!(
            "Basic {}",
            base64_encode(format!("{user}:{pass}").as_bytes())
        );
        let (status, extra, out_body): (u16, Vec<(String, String)>, Vec<u8>) = if path
            .starts_with("/token")
        {
            seen.lock().unwrap().push(path.clone());
            if header("authorization").as_deref() == Some(basic.as_str()) {
                (
                    200,
                    vec![("Content-Type".into(), "application/json".into())],
                    format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#).into_bytes(),
                )
            } else {
                (401, vec![], b"bad credentials".to_vec())
            }
        } else if header("authorization").as_deref() == Some(&format!("Bearer {TOKEN}")) {
            let fwd: Vec<(&str, &str)> = headers
                .iter()
                .filter(|(k, _)| k == "accept" || k == "range")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let r = http_request(backend, &method, &path, None, &fwd, &body).unwrap();
            let keep = [
                "content-type",
                "docker-content-digest",
                "content-range",
                "accept-ranges",
            ];
            let extra = r
                .headers
                .iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .cloned()
                .collect();
            (r.status, extra, r.body)
        } else {
            let repo = path
                .strip_prefix("/v2/")
                .and_then(|p| p.split("/manifests/").next())
                .and_then(|p| p.split("/blobs/").next())
                .unwrap_or("");
            let challenge = format!(
                r#"Bearer realm="http://{me}/token",service="gapbundle-test",scope="repository:{repo}:pull""#
            );
            (401, vec![("WWW-Authenticate".into(), challenge)], b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}".to_vec())
        };
        let mut resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n",
            out_body.len()
        );
        for (k, v) in extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        let body_out: &[u8] = if method == "HEAD" { &[] } else { &out_body };
        if conn
            .write_all(resp.as_bytes())
            .and_then(|_| conn.write_all(body_out))
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn bearer_token_flow_in_front_of_the_real_registry() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let front = start_token_front(reg.addr.clone(), "bob", "hunter2");
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("{}/team/app:1.2", front.addr);
    std::fs::write(
        dir.path().join("bundle.yaml"),
        format!("name: t\nversion: \"1\"\nimages:\n  - ref: {reference}\n"),
    )
    .unwrap();
    let create = |creds: Option<&str>, out: &str| {
        let mut c = create_unsigned_cmd(
            &dir.path().join("bundle.yaml"),
            &dir.path().join(out),
            &dir.path().join("cache"),
        );
        c.args(["--insecure-registry", &front.addr, "--retries", "1"])
            .arg("--docker-config")
            .arg(dir.path().join("no-docker-config.json"));
        if let Some(c2) = creds {
            c.args(["--registry-auth", &format!("{}={c2}", front.addr)]);
        }
        c.output().unwrap()
    };
    let denied = create(None, "a.gapb");
    assert_eq!(
        denied.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let wrong = create(Some("bob:wrong"), "a.gapb");
    assert_eq!(wrong.status.code(), Some(5));

    let ok = create(Some("bob:hunter2"), "a.gapb");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The token was asked for with the scope the challenge named.
    let asked = front.token_requests.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .any(|p| p.contains("scope=repository%3Ateam%2Fapp%3Apull")
                || p.contains("scope=repository:team/app:pull")),
        "{asked:?}"
    );
    // What came through the token front is the registry's image, digests unchanged.
    let x = dir.path().join("x");
    extract(&dir.path().join("a.gapb"), &x);
    assert_eq!(
        skopeo_digest(&format!("oci:{}:{reference}", x.display())),
        fx.app.manifest_digest
    );
}
