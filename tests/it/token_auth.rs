//! The bearer-token flow (what Docker Hub, GHCR, Harbor use): the registry answers
//! 401 with a `WWW-Authenticate: Bearer realm=...` challenge, the client trades its
//! credentials for a token at the realm, then retries with the token. The real
//! distribution registry only does token auth with a separate JWT-signing token
//! service, so this test puts a small token server of its own in front of the real
//! registry: it issues and checks an opaque token and forwards authorised requests,
//! byte for byte, to the real registry behind it.

use std::sync::{Arc, Mutex};

use crate::support::*;

const TOKEN: &str = "opaque-test-token-1";

struct TokenFront {
    addr: String,
    token_requests: Arc<Mutex<Vec<String>>>,
    _server: FakeHttp,
}

/// A token service and registry front on 127.0.0.1: `/token` trades `user:pass`
/// (basic auth) for [`TOKEN`]; a request with the token goes on to `backend`; any
/// other gets the 401 challenge that names the realm and the repository's scope.
fn start_token_front(backend: String, user: &str, pass: &str) -> TokenFront {
    let token_requests = Arc::new(Mutex::new(Vec::new()));
    let seen = token_requests.clone();
    let basic = format!(
        "Basic {}",
        base64_encode(format!("{user}:{pass}").as_bytes())
    );
    let bearer = format!("Bearer {TOKEN}");
    let server = FakeHttp::keep_alive(move |req| {
        let authorization = req.header("authorization");
        if req.path.starts_with("/token") {
            seen.lock().unwrap().push(req.path.clone());
            if authorization == Some(basic.as_str()) {
                Response::new(200, format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#))
                    .header("Content-Type", "application/json")
            } else {
                Response::new(401, "bad credentials")
            }
        } else if authorization == Some(bearer.as_str()) {
            let fwd: Vec<(&str, &str)> = req
                .headers
                .iter()
                .filter(|(k, _)| k == "accept" || k == "range")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let r = http_request(&backend, &req.method, &req.path, None, &fwd, &req.body).unwrap();
            let keep = [
                "content-type",
                "docker-content-digest",
                "content-range",
                "accept-ranges",
            ];
            r.headers
                .iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .fold(Response::new(r.status, r.body.clone()), |resp, (k, v)| {
                    resp.header(k, v)
                })
        } else {
            let repo = req
                .path
                .strip_prefix("/v2/")
                .and_then(|p| p.split("/manifests/").next())
                .and_then(|p| p.split("/blobs/").next())
                .unwrap_or("");
            let challenge = format!(
                r#"Bearer realm="http://{}/token",service="gapbundle-test",scope="repository:{repo}:pull""#,
                req.server_addr
            );
            Response::new(
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
            .header("WWW-Authenticate", &challenge)
        }
    });
    TokenFront {
        addr: server.addr().to_string(),
        token_requests,
        _server: server,
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
