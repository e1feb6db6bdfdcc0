//! The registry resolver against the real CNCF distribution registry.
//!
//! Why: resolving and downloading is where gapbundle meets other people's
//! servers, so it is tested against the real `docker-registry` (plain and with
//! htpasswd), with images pushed by the real skopeo and checked by hashing the
//! cached files independently. Two faults the real registry cannot be made to
//! produce on demand (a connection dropped halfway through a blob, and wrong
//! bytes for a blob) use the harness's fake HTTP server on 127.0.0.1.
//! Nothing here talks to any address other than 127.0.0.1.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gapbundle::bundle::keys::SecretKey;
use gapbundle::bundle::manifest::BlobEntry;
use gapbundle::bundle::signature::Envelope;
use gapbundle::bundle::writer::{write_bundle, BundleBuilder};
use gapbundle::bundle::Digest;
use gapbundle::io::bundle_file::{write_parallel, Pieces, Placement};
use gapbundle::io::cas::Cas;
use gapbundle::progress::Progress;
use gapbundle::registry::auth::{self, parse_registry_auth};
use gapbundle::registry::Settings as RegistryOptions;
use gapbundle::resolve::image::{walk, Blob};
use gapbundle::resolve::registry::{FetchStats, Registry as Resolver};
use gapbundle::spec::Platforms;
use tempfile::TempDir;

use crate::support::*;

const USER: &str = "gap";
const PASS: &str = "bundle-pass";

/// A Docker config path that does not exist, so the developer's own
/// `~/.docker/config.json` never leaks into a test.
fn no_docker_config(dir: &Path) -> Option<PathBuf> {
    Some(dir.join("no-docker-config.json"))
}

fn options(addr: &str, dir: &Path) -> RegistryOptions {
    RegistryOptions {
        insecure_hosts: vec![addr.to_string()],
        credentials: Vec::new(),
        docker_config: no_docker_config(dir),
        jobs: 4,
        retries: 2,
        ..RegistryOptions::default()
    }
}

fn cas_in(dir: &Path) -> Cas {
    Cas::open(dir.join("cas")).expect("open cas")
}

fn digest(s: &str) -> Digest {
    s.parse().expect("digest")
}

/// Every blob (config + layers) of `reference`, found by walking it with the
/// resolver itself, paired with the repository to fetch it from.
fn plan(res: &Resolver, cas: &Cas, reference: &str) -> (Digest, Vec<(String, Blob)>) {
    let root = res.resolve(cas, reference, None).expect("resolve");
    let mut fetch = res.manifests(cas, reference).expect("manifests");
    let p = walk(&root.bytes, &root.media_type, &Platforms::All, &mut fetch).expect("walk");
    (
        root.digest,
        p.blobs
            .into_iter()
            .map(|b| (reference.to_string(), b))
            .collect(),
    )
}

fn assert_cached_file_hashes(cas: &Cas, blobs: &[(String, Blob)]) {
    for (_, b) in blobs {
        let bytes = std::fs::read(cas.path(&b.digest)).expect("cached blob");
        assert_eq!(
            sha256_digest(&bytes),
            b.digest.to_string(),
            "cached file content"
        );
        assert_eq!(bytes.len() as u64, b.size);
    }
}

#[test]
fn resolves_tags_and_digests_and_fetches_blobs_once() {
    let mut reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let dir = tempfile::tempdir().unwrap();
    let cas = cas_in(dir.path());
    let res = Resolver::new(options(&reg.addr, dir.path())).unwrap();

    // A tag.
    let app = res.resolve(&cas, &fx.app.reference, None).unwrap();
    assert_eq!(app.name, format!("{}/team/app:1.2", reg.addr));
    assert_eq!(app.digest, digest(&fx.app.manifest_digest));
    assert_eq!(app.media_type, OCI_MANIFEST_MEDIA_TYPE);
    assert_eq!(sha256_digest(&app.bytes), fx.app.manifest_digest);
    assert!(cas.contains(&app.digest, Some(app.bytes.len() as u64)));

    // An index by tag, and a manifest by digest in a fresh cache.
    let multi = res.resolve(&cas, &fx.multi.reference, None).unwrap();
    assert_eq!(multi.digest, digest(&fx.multi.index_digest));
    assert_eq!(multi.media_type, OCI_INDEX_MEDIA_TYPE);
    let dir2 = tempfile::tempdir().unwrap();
    let cas2 = cas_in(dir2.path());
    let by_digest = fx.tool.reference_by_digest();
    let tool = res.resolve(&cas2, &by_digest, None).unwrap();
    assert_eq!(tool.name, by_digest);
    assert_eq!(tool.digest, digest(&fx.tool.manifest_digest));
    // Pinned but not cached: fetched by digest even though the tag is given.
    let pinned = res
        .resolve(
            &cas2,
            &fx.app.reference,
            Some(digest(&fx.app.manifest_digest)),
        )
        .unwrap();
    assert_eq!(pinned.name, fx.app.reference);
    assert_eq!(pinned.digest, digest(&fx.app.manifest_digest));

    // Blobs of all three images; app and tool share the base layer.
    let mut blobs = Vec::new();
    let mut children = BTreeSet::new();
    for reference in [&fx.app.reference, &fx.tool.reference, &fx.multi.reference] {
        let (_, b) = plan(&res, &cas, reference);
        blobs.extend(b);
    }
    for p in &fx.multi.platforms {
        children.insert(p.manifest_digest.clone());
        assert!(
            cas.contains(&digest(&p.manifest_digest), None),
            "child manifest cached"
        );
    }
    assert_eq!(children.len(), 2);
    let unique: BTreeSet<_> = blobs.iter().map(|(_, b)| b.digest).collect();
    // app: config + 2 layers, tool: config + 1 new layer, multi: 2 × (config + layer).
    assert_eq!(unique.len(), 3 + 2 + 4, "{unique:?}");
    // The walk already cached the single-platform configs (it reads their
    // platform); the rest is fetched.
    let stats = res.fetch_blobs(&cas, &blobs, &Progress::quiet()).unwrap();
    assert_eq!(stats.fetched + stats.cached, unique.len());
    assert!(stats.fetched >= 5, "{stats:?}");
    assert!(stats.fetched_bytes > BASE_BLOB_SIZE as u64, "{stats:?}");
    assert_cached_file_hashes(&cas, &blobs);
    assert!(cas.contains(&digest(&fx.base_layer_digest), None));

    // Again: nothing to fetch.
    let again = res.fetch_blobs(&cas, &blobs, &Progress::quiet()).unwrap();
    assert_eq!(again.fetched, 0);
    assert_eq!(again.fetched_bytes, 0);
    assert_eq!(again.cached, unique.len());

    // Pinned and cached: no network at all (the registry is gone).
    reg.stop();
    let offline = res
        .resolve(
            &cas,
            &fx.multi.reference,
            Some(digest(&fx.multi.index_digest)),
        )
        .unwrap();
    assert_eq!(offline.bytes, multi.bytes);
    assert_eq!(offline.media_type, OCI_INDEX_MEDIA_TYPE);
    let mut fetch = res.manifests(&cas, &fx.multi.reference).unwrap();
    walk(
        &offline.bytes,
        &offline.media_type,
        &Platforms::All,
        &mut fetch,
    )
    .expect("walk from the cache alone");
}

#[test]
fn missing_tags_and_repositories_say_so() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let dir = tempfile::tempdir().unwrap();
    let cas = cas_in(dir.path());
    let res = Resolver::new(options(&reg.addr, dir.path())).unwrap();

    let missing = format!("{}/team/app:9.9", reg.addr);
    let err = res.resolve(&cas, &missing, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{missing} does not exist in the registry (manifest unknown): check the tag")
    );

    let err = res
        .resolve(&cas, &format!("{}/team/nope:1", reg.addr), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("team/nope") && err.contains("check the"),
        "{err}"
    );

    // A digest in the reference is checked against the lock's pin.
    let other = digest(&fx.tool.manifest_digest);
    let err = res
        .resolve(&cas, &fx.app.reference_by_digest(), Some(other))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lock file pins"), "{err}");

    let err = res
        .resolve(&cas, "Not A Reference", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a valid image reference"), "{err}");
}

#[test]
fn htpasswd_registry_needs_credentials() {
    let reg = Registry::start_with_htpasswd(USER, PASS);
    let fx = push_fixture_images(&reg, reg.creds());
    let dir = tempfile::tempdir().unwrap();
    let cas = cas_in(dir.path());

    // Anonymous: refused, and the message says how to log in.
    let anon = Resolver::new(options(&reg.addr, dir.path())).unwrap();
    let err = anon.resolve(&cas, &fx.app.reference, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "registry {0} refused access to team/app (401 Unauthorized): pass --registry-auth {0}=USER:PASS or log in with `docker login {0}` (~/.docker/config.json)",
            reg.addr
        )
    );
    // Blobs alone (manifests cached, say) are refused the same way.
    let fake_blob = Blob {
        digest: digest(&fx.base_layer_digest),
        size: BASE_BLOB_SIZE as u64,
        media_type: String::new(),
    };
    let err = anon
        .fetch_blobs(
            &cas,
            &[(fx.app.reference.clone(), fake_blob)],
            &Progress::quiet(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refused access to team/app (401 Unauthorized)"),
        "{err}"
    );

    // Wrong password: the message blames the flag.
    let mut o = options(&reg.addr, dir.path());
    o.credentials = vec![parse_registry_auth(&format!("{}={USER}:wrong", reg.addr)).unwrap()];
    let err = Resolver::new(o)
        .unwrap()
        .resolve(&cas, &fx.app.reference, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--registry-auth") && err.contains("were refused"),
        "{err}"
    );

    // Right password from the flag: everything works, blobs included.
    let mut o = options(&reg.addr, dir.path());
    o.credentials = vec![parse_registry_auth(&format!("{}={USER}:{PASS}", reg.addr)).unwrap()];
    let res = Resolver::new(o).unwrap();
    let (root, blobs) = plan(&res, &cas, &fx.app.reference);
    assert_eq!(root, digest(&fx.app.manifest_digest));
    res.fetch_blobs(&cas, &blobs, &Progress::quiet()).unwrap();
    assert_cached_file_hashes(&cas, &blobs);

    // The same credentials from a Docker config file (`docker login`).
    let cfg = dir.path().join("docker-config.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.addr,
            base64_encode(format!("{USER}:{PASS}").as_bytes())
        ),
    )
    .unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let cas2 = cas_in(dir2.path());
    let mut o = options(&reg.addr, dir.path());
    o.docker_config = Some(cfg.clone());
    let res = Resolver::new(o).unwrap();
    let (_, blobs) = plan(&res, &cas2, &fx.tool.reference);
    res.fetch_blobs(&cas2, &blobs, &Progress::quiet()).unwrap();
    assert_cached_file_hashes(&cas2, &blobs);

    // A credential helper for the host: a clear refusal to run it.
    std::fs::write(
        &cfg,
        format!(r#"{{"credHelpers":{{"{}":"pass"}}}}"#, reg.addr),
    )
    .unwrap();
    let mut o = options(&reg.addr, dir.path());
    o.docker_config = Some(cfg);
    let err = Resolver::new(o)
        .unwrap()
        .resolve(&cas2, &fx.multi.reference, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("docker-credential-pass")
            && err.contains(&format!("--registry-auth {}=USER:PASS", reg.addr)),
        "{err}"
    );
    let _ = auth::default_docker_config();
}

#[test]
fn a_registry_that_is_down_is_reported_quickly() {
    let mut reg = Registry::start();
    let addr = reg.addr.clone();
    reg.stop();
    let dir = tempfile::tempdir().unwrap();
    let cas = cas_in(dir.path());
    let res = Resolver::new(options(&addr, dir.path())).unwrap();
    let started = Instant::now();
    let err = res
        .resolve(&cas, &format!("{addr}/team/app:1.2"), None)
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        err.to_string(),
        format!("cannot reach registry {addr} (connection refused) after 2 attempts: nothing accepts connections at {addr}: is the registry running there, and is the port right?")
    );

    // Not declared insecure: the same advice (a refused connection is refused
    // whether or not TLS would follow), and no --insecure-registry.
    let mut o = options(&addr, dir.path());
    o.insecure_hosts.clear();
    let err = Resolver::new(o)
        .unwrap()
        .resolve(&cas, &format!("{addr}/team/app:1.2"), None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot reach registry {addr} (connection refused) after 2 attempts: nothing accepts connections at {addr}: is the registry running there, and is the port right?")
    );
}

#[test]
fn https_to_a_plain_http_registry_suggests_insecure_registry() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let cas = cas_in(dir.path());
    let mut o = options(&reg.addr, dir.path());
    o.insecure_hosts.clear();
    let err = Resolver::new(o)
        .unwrap()
        .resolve(&cas, &format!("{}/team/app:1.2", reg.addr), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("TLS connection to registry {} failed", reg.addr))
            && err.contains(&format!("pass --insecure-registry {}", reg.addr)),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// A fake registry for faults the real one cannot produce on demand.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Fault {
    /// First blob request: 200, half the bytes, then the connection drops.
    DropHalfway,
    /// Every blob request: the right length of the wrong bytes.
    WrongBytes,
    /// First blob request: 503; then the blob.
    UnavailableOnce,
    /// First blob request: the right length of the wrong bytes; then the blob.
    WrongBytesOnce,
}

struct Fake {
    addr: String,
    /// `Range` header of each blob request (`None` when absent).
    blob_requests: Arc<Mutex<Vec<Option<String>>>>,
    _server: FakeHttp,
}

/// A registry that serves `blob` as `x/y` with `fault`, and nothing else.
fn fake_registry(blob: Vec<u8>, fault: Fault) -> Fake {
    let blob_path = format!("/v2/x/y/blobs/{}", sha256_digest(&blob));
    let blob_requests = Arc::new(Mutex::new(Vec::new()));
    let log = blob_requests.clone();
    let server = FakeHttp::start(move |req| {
        if req.path == "/v2/" {
            return Response::new(200, "{}");
        }
        if req.path != blob_path {
            return Response::new(
                404,
                r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
            )
            .header("Content-Type", "application/json");
        }
        let range = req.header("range").map(str::to_string);
        let n = {
            let mut l = log.lock().unwrap();
            l.push(range.clone());
            l.len()
        };
        match (fault, n, range) {
            (Fault::DropHalfway, 1, _) => Response::new(200, blob.clone())
                .header("Content-Type", "application/octet-stream")
                .cut_after(blob.len() / 2),
            (Fault::DropHalfway, _, Some(r)) => {
                let from: usize = r
                    .trim_start_matches("bytes=")
                    .trim_end_matches('-')
                    .parse()
                    .expect("open-ended range");
                let cr = format!("bytes {from}-{}/{}", blob.len() - 1, blob.len());
                Response::new(206, &blob[from..]).header("Content-Range", &cr)
            }
            (Fault::DropHalfway, _, None) => Response::new(200, blob.clone()),
            (Fault::UnavailableOnce, 1, _) => Response::new(503, "try later"),
            (Fault::WrongBytesOnce, 1, _) | (Fault::WrongBytes, _, _) => {
                let mut bad = blob.clone();
                bad[7] ^= 0xff;
                Response::new(200, bad)
            }
            (Fault::UnavailableOnce | Fault::WrongBytesOnce, _, _) => {
                Response::new(200, blob.clone())
            }
        }
    });
    Fake {
        addr: server.addr().to_string(),
        blob_requests,
        _server: server,
    }
}

fn fake_blob(bytes: &[u8]) -> Blob {
    Blob {
        digest: digest(&sha256_digest(bytes)),
        size: bytes.len() as u64,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
    }
}

/// Fetches `blob` from the fake registry at `addr` (as `x/y`) into `cas`.
fn fetch_one(res: &Resolver, cas: &Cas, addr: &str, blob: &Blob) -> anyhow::Result<FetchStats> {
    res.fetch_blobs(
        cas,
        &[(format!("{addr}/x/y:1"), blob.clone())],
        &Progress::quiet(),
    )
}

/// `len` deterministic bytes (from `seed`) as one blob of a fake registry with
/// `fault`, a fresh cache, and a resolver that fetches from the fake.
struct FaultCase {
    bytes: Vec<u8>,
    blob: Blob,
    fake: Fake,
    dir: TempDir,
    cas: Cas,
    res: Resolver,
}

impl FaultCase {
    fn new(seed: u64, len: usize, fault: Fault) -> FaultCase {
        let bytes = deterministic_bytes(seed, len);
        let fake = fake_registry(bytes.clone(), fault);
        let dir = tempfile::tempdir().unwrap();
        let cas = cas_in(dir.path());
        let res = Resolver::new(options(&fake.addr, dir.path())).unwrap();
        FaultCase {
            blob: fake_blob(&bytes),
            bytes,
            fake,
            dir,
            cas,
            res,
        }
    }

    /// Fetches the blob into the cache.
    fn fetch(&self) -> anyhow::Result<FetchStats> {
        fetch_one(&self.res, &self.cas, &self.fake.addr, &self.blob)
    }

    /// `Range` header of each blob request the fake answered.
    fn blob_requests(&self) -> Vec<Option<String>> {
        self.fake.blob_requests.lock().unwrap().clone()
    }
}

#[test]
fn an_interrupted_download_resumes_with_range() {
    let t = FaultCase::new(42, 300_000, Fault::DropHalfway);
    let stats = t.fetch().unwrap();
    assert_eq!(stats.fetched, 1);
    assert_eq!(stats.fetched_bytes, t.bytes.len() as u64);
    assert_eq!(std::fs::read(t.cas.path(&t.blob.digest)).unwrap(), t.bytes);
    assert_eq!(
        t.blob_requests(),
        vec![None, Some(format!("bytes={}-", t.bytes.len() / 2))],
        "one full request, then a resume from the half"
    );
}

#[test]
fn wrong_bytes_are_retried_once_then_reported() {
    let t = FaultCase::new(7, 50_000, Fault::WrongBytes);
    let err = t.fetch().unwrap_err().to_string();
    let mut bad = t.bytes.clone();
    bad[7] ^= 0xff;
    assert!(err.contains(&t.blob.digest.to_string()), "{err}");
    assert!(err.contains(&format!("{}/x/y", t.fake.addr)), "{err}");
    assert!(
        err.contains(&format!(
            "expected {} (50000 bytes), found {} (50000 bytes)",
            t.blob.digest,
            sha256_digest(&bad)
        )),
        "{err}"
    );
    assert_eq!(t.blob_requests().len(), 2, "retried once from scratch");
    assert!(!t.cas.contains(&t.blob.digest, None));
    assert!(!t
        .cas
        .root()
        .join("partial")
        .join(t.blob.digest.hex())
        .exists());
}

/// A download may also write its bytes at the blob's offset in the bundle being
/// created, as they stream (io::bundle_file's Placement). Only a blob that one
/// stream wrote whole and that hashed to its digest counts as placed there; wrong
/// bytes fetched again, or a download that broke off and resumed, leave the bundle
/// writer to copy the blob from the cache over what the streams left. Either way
/// the bundle is byte for byte the one written from the cache alone.
#[test]
fn a_blob_counts_as_placed_in_the_bundle_only_after_one_verified_stream() {
    for (seed, fault, placed) in [
        (11, Fault::UnavailableOnce, true),
        (12, Fault::WrongBytesOnce, true),
        (13, Fault::DropHalfway, false),
    ] {
        let t = FaultCase::new(seed, 300_000, fault);
        let mut b = BundleBuilder::new("t", "1", 0, vec!["all".into()]);
        b.add_blob(
            BlobEntry::new(t.blob.digest, t.blob.size, &t.blob.media_type),
            0,
        )
        .unwrap();
        let plan = b.finish().unwrap();
        let key = SecretKey::from_seed("t", [3; 32]).unwrap();
        let env = Envelope::sign(plan.digest, &[key]);
        let out = t.dir.path().join("placed.gapb");
        std::fs::File::create(&out).unwrap();
        let placement = Arc::new(Placement::new(&out, &plan, &env));
        t.res
            .fetch_blobs_into(
                &t.cas,
                &[(format!("{}/x/y:1", t.fake.addr), t.blob.clone())],
                Some(placement.clone()),
                &Progress::quiet(),
            )
            .unwrap();
        assert_eq!(placement.holds(&t.blob.digest), placed, "{seed}");
        write_parallel(
            &Pieces::one(&out),
            &plan,
            &env,
            &t.cas,
            2,
            Some(&placement),
            &|_| {},
        )
        .unwrap();
        let mut whole = Vec::new();
        write_bundle(&mut whole, &plan, &env, &t.cas, |_| {}).unwrap();
        let bundle = std::fs::read(&out).unwrap();
        assert!(bundle == whole, "{seed}");
        // The blob's own bytes, not the wrong ones, in the cache and the bundle.
        assert!(std::fs::read(t.cas.path(&t.blob.digest)).unwrap() == t.bytes);
        let at = plan.data_start(&env) + plan.stored_blobs().next().unwrap().offset.unwrap();
        assert!(
            bundle[at as usize..][..t.bytes.len()] == t.bytes[..],
            "{seed}"
        );
    }
}

#[test]
fn server_errors_are_retried() {
    let t = FaultCase::new(9, 10_000, Fault::UnavailableOnce);
    let stats = t.fetch().unwrap();
    assert_eq!(stats.fetched, 1);
    assert_eq!(std::fs::read(t.cas.path(&t.blob.digest)).unwrap(), t.bytes);
    assert_eq!(t.blob_requests().len(), 2);

    // With a single attempt allowed, the 503 is final and says so.
    let (bytes, blob) = (&t.bytes, &t.blob);
    let fake = fake_registry(bytes.clone(), Fault::UnavailableOnce);
    let mut o = options(&fake.addr, t.dir.path());
    o.retries = 1;
    let dir2 = tempfile::tempdir().unwrap();
    let err = fetch_one(
        &Resolver::new(o).unwrap(),
        &cas_in(dir2.path()),
        &fake.addr,
        blob,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!(
            "registry {} failed with 503 Service Unavailable",
            fake.addr
        )) && err.contains(&blob.digest.to_string())
            && err.contains("after 1 attempt"),
        "{err}"
    );
}
