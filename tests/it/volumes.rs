//! Split volumes with parity, end to end against the real things: volumes written
//! by `create --volume-size` and by `split` are the same files and `cat` joins them
//! into the very bundle a plain create writes; verify, import into a real
//! containerd and into a real Nix store take the first volume; a missing volume and
//! a flipped byte are named; with parity, lost and damaged volumes are rebuilt by
//! `join` and on the fly by verify and import; a create killed with SIGKILL leaves
//! no volume under a final name. Parity headers are read here with serde_json and
//! checked with sha256 of the files, independently of the code under test.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gapbundle::bundle::reader::read_head;
use serde_json::Value;

use crate::support::*;

/// The spec of the three fixture images in `reg`.
fn spec(w: &Work, reg: &Registry) -> PathBuf {
    let spec = w.path("bundle.yaml");
    fs::write(
        &spec,
        format!(
            "name: edge-site\nversion: \"1.0\"\nimages:\n  - ref: {0}/team/app:1.2\n  - ref: {0}/team/tool:0.3\n  - ref: {0}/team/multi:1.0\n",
            reg.addr
        ),
    )
    .unwrap();
    spec
}

/// `create` of the spec to `out` (relative to the work folder), with `extra`.
fn create(w: &Work, reg: &Registry, out: &str, extra: &[&str]) -> PathBuf {
    spec(w, reg);
    let out = w.path(out);
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    run(w
        .create(&out)
        .args(["--insecure-registry", &reg.addr, "--quiet"])
        .args(extra));
    out
}

/// `verify BUNDLE --trust KEY`, whatever its outcome.
fn verify(bundle: &Path, trust: &Path) -> Output {
    gapbundle()
        .arg("verify")
        .arg(bundle)
        .arg("--trust")
        .arg(trust)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `join FIRST -o OUT`, which must succeed.
fn join(first: &Path, out: &Path) -> Output {
    ok(gapbundle()
        .arg("join")
        .arg(first)
        .arg("-o")
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .unwrap())
}

/// `import --staged` into a K3s root of its own: nothing but a folder to look at.
fn import_staged(bundle: &Path, trust: &Path, root: &Path) -> Output {
    gapbundle()
        .arg("import")
        .arg(bundle)
        .arg("--trust")
        .arg(trust)
        .arg("--k3s-root")
        .arg(root)
        .arg("--staged")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The files of the set `PREFIX.*` (volumes and parity volumes), by name.
fn set_of(prefix: &Path) -> BTreeMap<String, Vec<u8>> {
    let dir = prefix.parent().unwrap();
    let stem = format!("{}.", prefix.file_name().unwrap().to_str().unwrap());
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| {
            let name = e.file_name().into_string().unwrap();
            name.strip_prefix(&stem)
                .map(|s| (s.to_string(), fs::read(e.path()).unwrap()))
        })
        .collect()
}

/// The data volumes of `set`, in order, concatenated.
fn joined(set: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    set.iter()
        .filter(|(k, _)| k.len() == 3 && k.bytes().all(|b| b.is_ascii_digit()))
        .flat_map(|(_, v)| v.iter().copied())
        .collect()
}

/// The JSON header of a parity volume, read as format.md 11.3 says.
fn parity_header(bytes: &[u8]) -> Value {
    assert_eq!(&bytes[..16], b"gapbundle-parity");
    let len = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let json = &bytes[20..20 + len];
    assert_eq!(
        sha256_digest(&bytes[..20 + len]).trim_start_matches("sha256:"),
        hex(&bytes[20 + len..20 + len + 32]),
        "the header's own checksum"
    );
    serde_json::from_slice(json).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A volume size that cuts `bundle` into about four volumes at no round number.
fn awkward_size(bundle: &Path) -> u64 {
    let len = fs::metadata(bundle).unwrap().len();
    let head = head_of(bundle);
    (len / 4 + 1234).max(head.data_start + 512)
}

#[test]
fn volumes_from_create_and_from_split_agree_and_concatenate_to_the_bundle() {
    let reg = Registry::start();
    push_fixture_images(&reg, None);
    let w = Work::new("volumes-test");
    let plain = create(&w, &reg, "site.gapb", &[]);
    let bytes = fs::read(&plain).unwrap();
    let head = head_of(&plain);
    let size = awkward_size(&plain);
    let s = size.to_string();

    let created = w.path("made/site.gapb");
    fs::create_dir_all(created.parent().unwrap()).unwrap();
    let report = cli_report(
        &run(w
            .create(&created)
            .args(["--insecure-registry", &reg.addr, "--json"])
            .args(["--volume-size", &s, "--parity", "2"])),
        "create",
    );
    assert!(
        !created.exists(),
        "no whole bundle is written beside its volumes"
    );
    let split_prefix = w.path("cut/site.gapb");
    fs::create_dir_all(split_prefix.parent().unwrap()).unwrap();
    let o = ok(gapbundle()
        .args(["split"])
        .arg(&plain)
        .args(["--volume-size", &s, "--parity", "2", "-o"])
        .arg(&split_prefix)
        .output()
        .unwrap());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("2 parity volume(s)"),
        "{}",
        output_text(&o)
    );
    // The same as a --json report: every volume, named.
    let json_prefix = w.path("cut-json/site.gapb");
    fs::create_dir_all(json_prefix.parent().unwrap()).unwrap();
    let split = cli_report(
        &ok(gapbundle()
            .args(["--json", "split"])
            .arg(&plain)
            .args(["--volume-size", &s, "--parity", "2", "-o"])
            .arg(&json_prefix)
            .output()
            .unwrap()),
        "split",
    );

    let made = set_of(&created);
    let cut = set_of(&split_prefix);
    let count = (bytes.len() as u64).div_ceil(size) as usize;
    assert!(count >= 4, "{count} volumes");
    let mut names: Vec<String> = (1..=count).map(|i| format!("{i:03}")).collect();
    names.extend(["p01".to_string(), "p02".to_string()]);
    assert_eq!(made.keys().cloned().collect::<Vec<_>>(), names);
    assert!(made == cut, "create and split wrote different volumes");
    assert!(
        set_of(&json_prefix) == made,
        "split --json wrote other volumes"
    );
    for r in [&report, &split] {
        assert_eq!(r["volumes"].as_array().unwrap().len(), count, "{r}");
        assert_eq!(r["parityVolumes"].as_array().unwrap().len(), 2, "{r}");
        assert_eq!(r["digest"], head.digest.to_string());
    }
    assert_eq!(split["volumeSize"], size);
    assert!(
        joined(&made) == bytes,
        "cat of the volumes is not the bundle"
    );
    for (name, v) in &made {
        if !name.starts_with('p') && name != &format!("{count:03}") {
            assert_eq!(v.len() as u64, size, "volume {name}");
        }
    }

    // The parity header, read by hand, describes the set and its digests.
    let p1 = parity_header(&made["p01"]);
    assert_eq!(p1["bundleDigest"], head.digest.to_string());
    assert_eq!(p1["bundleSize"], bytes.len() as u64);
    assert_eq!(p1["volumeSize"], size);
    assert_eq!(p1["dataVolumes"], count as u64);
    assert_eq!(p1["parityVolumes"], 2);
    assert_eq!(p1["index"], 1);
    assert_eq!(p1["code"], "reed-solomon-gf256-vandermonde");
    for i in 0..count {
        assert_eq!(
            p1["data"][i],
            sha256_digest(&made[&format!("{:03}", i + 1)]),
            "digest of volume {}",
            i + 1
        );
    }
    let p2 = parity_header(&made["p02"]);
    assert_eq!(p2["index"], 2);
    assert_eq!(p2["data"], p1["data"]);
    for (j, name) in ["p01", "p02"].iter().enumerate() {
        let v = &made[*name];
        assert_eq!(
            v.len() as u64,
            4096 + size,
            "{name}: a 4 KiB header and one volume of parity"
        );
        assert_eq!(
            p1["parity"][j],
            sha256_digest(&v[4096..]),
            "{name}'s payload"
        );
    }

    // verify takes the first volume, and a pipe of the concatenation.
    let o = ok(verify(&created.with_extension("gapb.001"), &w.public()));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&head.digest.to_string()),
        "{}",
        output_text(&o)
    );
    let o = ok(Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat {dir}/site.gapb.0* | {gb} verify - --trust {key}",
            dir = created.parent().unwrap().display(),
            gb = gapbundle_bin().display(),
            key = w.public().display()
        ))
        .output()
        .unwrap());
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("OK "),
        "{}",
        output_text(&o)
    );
    let o = ok(gapbundle()
        .arg("inspect")
        .arg(created.with_extension("gapb.001"))
        .output()
        .unwrap());
    assert!(String::from_utf8_lossy(&o.stdout).contains(&head.digest.to_string()));

    // A volume too small for the head is refused, naming the minimum (exit 4).
    let minimum = head.data_start + 512;
    let o = gapbundle()
        .arg("split")
        .arg(&plain)
        .args(["--volume-size", &(minimum - 1).to_string(), "-o"])
        .arg(w.path("small/site.gapb"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 4, "{}", output_text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("at least {minimum} bytes")),
        "{}",
        output_text(&o)
    );
    // Splitting again over a smaller set removes what the earlier set had more of.
    let bigger = (size * 2).to_string();
    let o = ok(gapbundle()
        .arg("split")
        .arg(&plain)
        .args(["--volume-size", &bigger, "-o"])
        .arg(&split_prefix)
        .output()
        .unwrap());
    let again = set_of(&split_prefix);
    assert!(!again.contains_key("p01") && !again.contains_key(&format!("{count:03}")));
    assert!(joined(&again) == bytes, "{}", output_text(&o));
}

#[test]
fn volumes_import_into_containerd_from_the_first_volume_with_two_rebuilt() {
    let ctd = Containerd::start();
    let reg = Registry::start();
    push_fixture_images(&reg, None);
    let w = Work::new("volumes-test");
    let plain = create(&w, &reg, "site.gapb", &[]);
    let s = awkward_size(&plain).to_string();
    let prefix = create(
        &w,
        &reg,
        "vol/site.gapb",
        &["--volume-size", &s, "--parity", "2"],
    );
    let first = prefix.with_extension("gapb.001");
    for n in ["002", "003"] {
        fs::remove_file(prefix.with_extension(format!("gapb.{n}"))).unwrap();
    }
    let o = ok(w
        .import(&first)
        .arg("--containerd")
        .arg(ctd.socket())
        .output()
        .unwrap());
    let err = String::from_utf8_lossy(&o.stderr);
    for n in [2, 3] {
        assert!(
            err.contains(&format!("volume {n} of"))
                && err.contains("rebuilding its bytes from parity"),
            "volume {n} is said to be rebuilt: {}",
            output_text(&o)
        );
    }
    let listed = ctd.ctr_stdout(&["images", "ls", "-q"]);
    for name in ["team/app:1.2", "team/tool:0.3", "team/multi:1.0"] {
        assert!(
            listed.lines().any(|l| l == format!("{}/{name}", reg.addr)),
            "{name} imported:\n{listed}"
        );
    }
    let check = ctd.ctr_stdout(&["images", "check"]);
    assert!(
        check.lines().skip(1).all(|l| l.contains("complete")),
        "{check}"
    );

    // join rebuilds both and names them; the result is the plain bundle.
    let out = w.path("joined.gapb");
    let o = join(&first, &out);
    let said = String::from_utf8_lossy(&o.stdout);
    for n in ["002", "003"] {
        assert!(
            said.contains(&format!(
                "rebuilt {}",
                prefix.with_extension(format!("gapb.{n}")).display()
            )),
            "{}",
            output_text(&o)
        );
    }
    assert!(fs::read(&out).unwrap() == fs::read(&plain).unwrap());
    // The same as a --json report, naming the volumes rebuilt.
    let joined_json = cli_report(
        &ok(gapbundle()
            .args(["--json", "join"])
            .arg(&first)
            .arg("-o")
            .arg(w.path("joined-json.gapb"))
            .stdin(Stdio::null())
            .output()
            .unwrap()),
        "join",
    );
    assert_eq!(
        joined_json["rebuilt"].as_array().unwrap().len(),
        2,
        "{joined_json}"
    );
    assert_eq!(joined_json["digest"], head_of(&plain).digest.to_string());
    // The joined file is the bundle: it verifies as one file.
    ok(verify(&out, &w.public()));
}

/// The first byte of the largest blob, and the volume (from 1) holding it.
fn byte_in_largest_blob(plain: &Path, size: u64) -> (u64, u64, String) {
    let head = head_of(plain);
    let blob = head.manifest.blobs.iter().max_by_key(|b| b.size).unwrap();
    let at = head.blob_position(blob).unwrap() + blob.size / 2;
    (at, at / size + 1, blob.digest.to_string())
}

fn flip(path: &Path, at: u64) {
    let mut v = fs::read(path).unwrap();
    v[at as usize] ^= 0x20;
    fs::write(path, v).unwrap();
}

#[test]
fn a_missing_volume_and_a_flipped_byte_are_named_and_parity_repairs_them() {
    let reg = Registry::start();
    push_fixture_images(&reg, None);
    let w = Work::new("volumes-test");
    let plain = create(&w, &reg, "site.gapb", &[]);
    let size = awkward_size(&plain);
    let s = size.to_string();
    let prefix = create(&w, &reg, "bare/site.gapb", &["--volume-size", &s]);
    let first = prefix.with_extension("gapb.001");
    let count = fs::metadata(&plain).unwrap().len().div_ceil(size);
    let vol = |n: u64| prefix.with_extension(format!("gapb.{n:03}"));

    // Missing, without parity: named by number before anything is written.
    let third = fs::read(vol(3)).unwrap();
    fs::remove_file(vol(3)).unwrap();
    let missing = format!("volume 3 of {count} ({}) is missing", vol(3).display());
    let o = verify(&first, &w.public());
    assert_eq!(code(&o), 3, "{}", output_text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&missing),
        "{}",
        output_text(&o)
    );
    let o = import_staged(&first, &w.public(), &w.path("k3s-missing"));
    assert_eq!(code(&o), 3, "{}", output_text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&missing),
        "{}",
        output_text(&o)
    );
    assert!(!w.path("k3s-missing").exists(), "no target was touched");
    // The last volume missing is named too (only the head knows there is one).
    fs::write(vol(3), &third).unwrap();
    let last = fs::read(vol(count)).unwrap();
    fs::remove_file(vol(count)).unwrap();
    let o = verify(&first, &w.public());
    assert_eq!(code(&o), 3, "{}", output_text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("volume {count} of {count}")),
        "{}",
        output_text(&o)
    );
    fs::write(vol(count), &last).unwrap();

    // A flipped byte, without parity: the blob and the volume that holds it.
    let (at, n, digest) = byte_in_largest_blob(&plain, size);
    flip(&vol(n), at - (n - 1) * size);
    let o = verify(&first, &w.public());
    assert_eq!(code(&o), 3, "{}", output_text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&digest)
            && err.contains("its bytes are in ")
            && err.contains(&vol(n).display().to_string()),
        "{}",
        output_text(&o)
    );
    // The one-pass import names them too, and writes nothing.
    let o = import_staged(&first, &w.public(), &w.path("k3s-flipped"));
    assert_eq!(code(&o), 3, "{}", output_text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&digest) && err.contains(&vol(n).display().to_string()),
        "{}",
        output_text(&o)
    );
    let staged = w.path("k3s-flipped/agent/images");
    assert!(
        !staged.exists() || fs::read_dir(&staged).unwrap().next().is_none(),
        "no archive appears"
    );

    // With parity, verify, import and join go on, and say which volume they rebuild.
    let prefix = create(
        &w,
        &reg,
        "par/site.gapb",
        &["--volume-size", &s, "--parity", "1"],
    );
    let first = prefix.with_extension("gapb.001");
    let damaged = prefix.with_extension(format!("gapb.{n:03}"));
    flip(&damaged, at - (n - 1) * size);
    let said = format!("{} is damaged", damaged.display());
    let o = ok(verify(&first, &w.public()));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&said),
        "{}",
        output_text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&digest),
        "{}",
        output_text(&o)
    );
    let o = ok(import_staged(&first, &w.public(), &w.path("k3s-parity")));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&said),
        "{}",
        output_text(&o)
    );
    assert!(
        w.path("k3s-parity/agent/images/edge-site.tar").exists(),
        "{}",
        output_text(&o)
    );
    let out = w.path("repaired.gapb");
    let o = join(&first, &out);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("rebuilt {}", damaged.display())),
        "{}",
        output_text(&o)
    );
    assert!(fs::read(&out).unwrap() == fs::read(&plain).unwrap());
    // Damage beyond what the parity rebuilds: named, exit 3.
    fs::remove_file(prefix.with_extension(if n == 1 { "gapb.002" } else { "gapb.001" })).unwrap();
    let o = verify(&first, &w.public());
    assert_eq!(code(&o), 3, "{}", output_text(&o));
}

/// A flake whose closure has one incompressible NAR of 3 MB, so that volumes of
/// 512 KiB cut through it.
const FLAKE: &str = r#"{
  outputs = { self }: let
    mk = name: script: builtins.derivation {
      inherit name;
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" script ];
      PATH = "/usr/bin:/bin";
    };
    big = mk "gb-volumes-big" "head -c 3000000 /dev/urandom > $out";
    top = mk "gb-volumes-top" "echo ${big} > $out";
  in { packages.x86_64-linux.top = top; };
}
"#;

#[test]
fn volumes_import_into_a_nix_store_from_the_first_volume_with_one_rebuilt() {
    let w = Work::new("volumes-test");
    fs::create_dir_all(w.path("flake")).unwrap();
    fs::write(w.path("flake/flake.nix"), FLAKE).unwrap();
    fs::write(
        w.path("bundle.yaml"),
        "name: nix-volumes\nversion: \"1\"\nnix:\n  - installable: ./flake#packages.x86_64-linux.top\n    gcRoot: top\n",
    )
    .unwrap();
    let prefix = w.path("vol/site.gapb");
    fs::create_dir_all(w.path("vol")).unwrap();
    run(create_cmd(
        &w.path("bundle.yaml"),
        &prefix,
        &w.secret(),
        &w.path("cache"),
    )
    .env("NIX_CONFIG", NIX_CONFIG)
    .args(["--quiet", "--volume-size", "512K", "--parity", "1"]));
    let first = prefix.with_extension("gapb.001");
    let head = head_of(&first);
    let paths: Vec<String> = head
        .manifest
        .objects
        .iter()
        .filter(|o| o.kind.as_str() == "nix-path")
        .map(|o| o.name.clone())
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    let count = head.file_len().div_ceil(512 << 10);
    assert!(count >= 6, "{count} volumes");
    // A volume in the middle of the big NAR is lost.
    fs::remove_file(prefix.with_extension("gapb.004")).unwrap();
    let root = w.path("store");
    let o = ok(gapbundle()
        .env("NIX_CONFIG", NIX_CONFIG)
        .args(["import", "--skip-images", "--skip-manifests", "--nix-store"])
        .arg(format!("local?root={}", root.display()))
        .arg(&first)
        .arg("--trust")
        .arg(w.public())
        .stdin(Stdio::null())
        .output()
        .unwrap());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("rebuilding its bytes from parity"),
        "{}",
        output_text(&o)
    );
    // Nix itself says the paths are valid and their contents match.
    let store = format!("local?root={}", root.display());
    let out = run_stdout(
        tool("nix-store")
            .env("NIX_CONFIG", NIX_CONFIG)
            .args(["--store", &store, "--check-validity", "--print-invalid"])
            .args(&paths),
    );
    assert!(out.trim().is_empty(), "invalid in the store: {out}");
    run(tool("nix-store").env("NIX_CONFIG", NIX_CONFIG).args([
        "--store",
        &store,
        "--verify",
        "--check-contents",
    ]));
}

#[test]
fn a_killed_create_leaves_no_volume_under_a_final_name() {
    let reg = Registry::start();
    push_fixture_images(&reg, None);
    let w = Work::new("volumes-test");
    let plain = create(&w, &reg, "site.gapb", &[]);
    // The smallest volumes: hundreds of them, each synced before any is renamed.
    let len = fs::metadata(&plain).unwrap().len();
    let size = (head_of(&plain).data_start + 512).max(len.div_ceil(900));
    let dir = w.path("killed");
    fs::create_dir_all(&dir).unwrap();
    let prefix = dir.join("site.gapb");
    let mut child = create_cmd(&spec(&w, &reg), &prefix, &w.secret(), &w.path("cache"))
        .args(["--insecure-registry", &reg.addr, "--quiet"])
        .args(["--volume-size", &size.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as its first temporary volume appears (in the set's
    // temporary folder, `.gapbundle.<pid>.site-gapb.<random>.tmp`).
    let deadline = Instant::now() + Duration::from_secs(60);
    let temp = |d: &Path| {
        fs::read_dir(d).unwrap().flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(".gapbundle.")
                && name.ends_with(".tmp")
                && e.path().join("site.gapb.001").exists()
        })
    };
    while !temp(&dir) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "create finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "no temporary volume appeared");
        std::thread::sleep(Duration::from_micros(200));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.is_empty()
            && left
                .iter()
                .all(|n| n.starts_with('.') && n.ends_with(".tmp")),
        "only temporary files are left: {left:?}"
    );
    // A rerun makes the whole set, which verifies.
    run(
        create_cmd(&spec(&w, &reg), &prefix, &w.secret(), &w.path("cache"))
            .args(["--insecure-registry", &reg.addr, "--quiet"])
            .args(["--volume-size", &size.to_string()]),
    );
    assert!(joined(&set_of(&prefix)) == fs::read(&plain).unwrap());
    ok(verify(&prefix.with_extension("gapb.001"), &w.public()));
    // The rerun removed what the killed create left.
    let left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

// ---------------------------------------------------------------------------
// The golden vector of a volume set (bundle-spec/vectors/volumes)

fn vectors() -> PathBuf {
    repo().join("bundle-spec/vectors")
}

const VECTOR_FILES: [&str; 5] = ["001", "002", "003", "p01", "p02"];

/// GF(2^8) as format.md 11.4 defines it, written from the text alone: polynomial
/// x^8 + x^4 + x^3 + x^2 + 1, multiplication by log and exp tables of the element 2.
struct Gf {
    exp: [u8; 512],
    log: [u8; 256],
}

impl Gf {
    fn new() -> Gf {
        let mut gf = Gf {
            exp: [0; 512],
            log: [0; 256],
        };
        let mut x: u16 = 1;
        for i in 0..255 {
            gf.exp[i] = x as u8;
            gf.exp[i + 255] = x as u8;
            gf.log[x as usize] = i as u8;
            x <<= 1;
            if x & 0x100 != 0 {
                x ^= 0x11d;
            }
        }
        gf
    }
    fn mul(&self, a: u8, b: u8) -> u8 {
        if a == 0 || b == 0 {
            return 0;
        }
        self.exp[self.log[a as usize] as usize + self.log[b as usize] as usize]
    }
    fn pow(&self, a: u8, n: usize) -> u8 {
        (0..n).fold(1, |acc, _| self.mul(acc, a))
    }
    fn inv(&self, a: u8) -> u8 {
        self.exp[255 - self.log[a as usize] as usize]
    }
    /// The rows of the encoding matrix for the parity shards: V * inverse(top of V),
    /// V[r][c] = r^c (0^0 = 1), rows data..data+parity.
    fn parity_rows(&self, data: usize, parity: usize) -> Vec<Vec<u8>> {
        let v: Vec<Vec<u8>> = (0..data + parity)
            .map(|r| (0..data).map(|c| self.pow(r as u8, c)).collect())
            .collect();
        // Gauss-Jordan inverse of the top data x data block.
        let mut a: Vec<Vec<u8>> = v[..data].to_vec();
        let mut inv: Vec<Vec<u8>> = (0..data)
            .map(|r| (0..data).map(|c| u8::from(r == c)).collect())
            .collect();
        for col in 0..data {
            let pivot = (col..data).find(|&r| a[r][col] != 0).unwrap();
            a.swap(col, pivot);
            inv.swap(col, pivot);
            let f = self.inv(a[col][col]);
            for c in 0..data {
                a[col][c] = self.mul(a[col][c], f);
                inv[col][c] = self.mul(inv[col][c], f);
            }
            for r in 0..data {
                let g = a[r][col];
                if r != col && g != 0 {
                    for c in 0..data {
                        a[r][c] ^= self.mul(g, a[col][c]);
                        inv[r][c] ^= self.mul(g, inv[col][c]);
                    }
                }
            }
        }
        v[data..]
            .iter()
            .map(|row| {
                (0..data)
                    .map(|c| (0..data).fold(0, |acc, k| acc ^ self.mul(row[k], inv[k][c])))
                    .collect()
            })
            .collect()
    }
}

#[test]
fn the_volume_vector_is_reproduced_and_its_parity_is_the_code_the_spec_defines() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("tiny.gapb");
    run(gapbundle()
        .arg("--quiet")
        .arg("split")
        .arg(vectors().join("tiny/tiny.gapb"))
        .args(["--volume-size", "5000", "--parity", "2", "-o"])
        .arg(&prefix));
    let golden = vectors().join("volumes");
    if std::env::var("GAPBUNDLE_BLESS").as_deref() == Ok("1") {
        fs::create_dir_all(&golden).unwrap();
        for f in VECTOR_FILES {
            fs::copy(
                prefix.with_extension(format!("gapb.{f}")),
                golden.join(format!("tiny.gapb.{f}")),
            )
            .unwrap();
        }
    }
    let mut files = BTreeMap::new();
    for f in VECTOR_FILES {
        let want = fs::read(golden.join(format!("tiny.gapb.{f}"))).unwrap_or_else(|e| {
            panic!("bundle-spec/vectors/volumes/tiny.gapb.{f}: {e} (GAPBUNDLE_BLESS=1 writes it)")
        });
        let got = fs::read(prefix.with_extension(format!("gapb.{f}"))).unwrap();
        assert!(
            got == want,
            "split no longer writes tiny.gapb.{f} byte for byte"
        );
        files.insert(f, want);
    }
    assert_eq!(
        set_of(&prefix).len(),
        VECTOR_FILES.len(),
        "nothing else is written"
    );
    let whole = fs::read(vectors().join("tiny/tiny.gapb")).unwrap();
    let data: Vec<&Vec<u8>> = ["001", "002", "003"].iter().map(|f| &files[f]).collect();
    assert!(data
        .iter()
        .flat_map(|v| v.iter().copied())
        .eq(whole.iter().copied()));
    assert_eq!(
        data.iter().map(|v| v.len()).collect::<Vec<_>>(),
        [5000, 5000, 2288]
    );

    // Each parity byte, recomputed from the spec's definition of the code.
    let gf = Gf::new();
    let rows = gf.parity_rows(3, 2);
    for (j, f) in ["p01", "p02"].iter().enumerate() {
        let h = parity_header(&files[f]);
        assert_eq!(h["index"], j as u64 + 1);
        let payload = &files[f][4096..];
        assert_eq!(payload.len(), 5000);
        for (o, &byte) in payload.iter().enumerate() {
            let want = data.iter().enumerate().fold(0u8, |acc, (i, v)| {
                acc ^ gf.mul(rows[j][i], v.get(o).copied().unwrap_or(0))
            });
            assert_eq!(byte, want, "{f} byte {o}");
        }
    }

    // Two data volumes lost: join rebuilds the bundle from the rest.
    let set = dir.path().join("set");
    fs::create_dir_all(&set).unwrap();
    for f in ["002", "p01", "p02"] {
        fs::write(set.join(format!("tiny.gapb.{f}")), &files[f]).unwrap();
    }
    let out = dir.path().join("joined.gapb");
    // The first volume is among the lost: it is named by path all the same.
    join(&set.join("tiny.gapb.001"), &out);
    assert!(fs::read(&out).unwrap() == whole);
}

/// Regression: parity volumes of another bundle beside a whole set once made the
/// reader take volume 1 for damaged and "rebuild" it from them.
#[test]
fn parity_volumes_of_another_bundle_are_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = vectors().join("tiny/tiny.gapb");
    let key = gapbundle::bundle::keys::SecretKey::parse(
        &fs::read_to_string(vectors().join("tiny/tiny.sec")).unwrap(),
    )
    .unwrap();
    let other = dir.path().join("other.gapb");
    resign(&tiny, &other, &key, |m| m["version"] = "2.0".into());
    let split = |bundle: &Path, prefix: &Path| {
        run(gapbundle()
            .arg("--quiet")
            .arg("split")
            .arg(bundle)
            .args(["--volume-size", "5000", "--parity", "1", "-o"])
            .arg(prefix));
    };
    let mine = dir.path().join("set/tiny.gapb");
    let theirs = dir.path().join("theirs/tiny.gapb");
    fs::create_dir_all(mine.parent().unwrap()).unwrap();
    fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    split(&tiny, &mine);
    split(&other, &theirs);
    fs::copy(
        theirs.with_extension("gapb.p01"),
        mine.with_extension("gapb.p01"),
    )
    .unwrap();
    let o = ok(verify(
        &mine.with_extension("gapb.001"),
        &vectors().join("tiny/tiny.pub"),
    ));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the parity volumes protect another bundle"),
        "{}",
        output_text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("OK golden-tiny 1.0 "),
        "the set's own bundle, not the parity's: {}",
        output_text(&o)
    );
}

/// The vector's set in a folder of its own, with `edit` applied to it.
fn vector_set(dir: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    for f in VECTOR_FILES {
        fs::copy(
            vectors().join(format!("volumes/tiny.gapb.{f}")),
            dir.join(format!("tiny.gapb.{f}")),
        )
        .unwrap();
    }
    edit(dir);
    dir.join("tiny.gapb.001")
}

#[test]
fn with_two_parity_volumes_a_lost_and_a_damaged_volume_are_both_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = fs::read(vectors().join("tiny/tiny.gapb")).unwrap();
    let head = read_head(&mut tiny.as_slice()).unwrap();
    let trust = vectors().join("tiny/tiny.pub");
    // A byte of the layer (the largest blob) flipped in the volume that holds it, and
    // the other volume after the head's lost as well.
    let blob = head.manifest.blobs.iter().max_by_key(|b| b.size).unwrap();
    let at = head.blob_position(blob).unwrap() + 5;
    let damaged = at / 5000 + 1;
    assert!(damaged >= 2, "the blob is after the first volume");
    let lost = if damaged == 2 { 3 } else { 2 };
    let first = vector_set(&dir.path().join("a"), |d| {
        fs::remove_file(d.join(format!("tiny.gapb.{lost:03}"))).unwrap();
        flip(
            &d.join(format!("tiny.gapb.{damaged:03}")),
            at - (damaged - 1) * 5000,
        );
    });
    let said_damaged = format!("tiny.gapb.{damaged:03} is damaged");
    let o = ok(verify(&first, &trust));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("tiny.gapb.{lost:03}) is missing")) && err.contains(&said_damaged),
        "{}",
        output_text(&o)
    );
    // A one-pass import checks every volume before it hands out a rebuilt byte.
    let o = ok(import_staged(&first, &trust, &dir.path().join("k3s")));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&said_damaged),
        "{}",
        output_text(&o)
    );
    assert!(
        dir.path().join("k3s/agent/images/golden-tiny.tar").exists(),
        "{}",
        output_text(&o)
    );
    let out = dir.path().join("joined.gapb");
    let o = join(&first, &out);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains(&format!("tiny.gapb.{damaged:03} from parity"))
            && said.contains(&format!("tiny.gapb.{lost:03} from parity")),
        "{}",
        output_text(&o)
    );
    assert!(fs::read(&out).unwrap() == tiny);

    // A byte of a tar header (the first data entry's, in volume 1 after the head).
    let first = vector_set(&dir.path().join("b"), |d| {
        flip(&d.join("tiny.gapb.001"), head.data_start + 10)
    });
    let o = ok(verify(&first, &trust));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("tiny.gapb.001 is damaged"),
        "{}",
        output_text(&o)
    );
    // Without the parity the same damage is named, with the volume.
    fs::remove_file(dir.path().join("b/tiny.gapb.p01")).unwrap();
    fs::remove_file(dir.path().join("b/tiny.gapb.p02")).unwrap();
    let o = verify(&first, &trust);
    assert_eq!(code(&o), 3, "{}", output_text(&o));
}
