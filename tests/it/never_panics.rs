//! Every parser of untrusted input answers with an error, never a panic.
//!
//! The coverage-guided fuzzers live in `fuzz/` (scripts/fuzz, docs/fuzzing.md);
//! this is their deterministic companion that plain `cargo test` runs: a fixed-seed
//! stream of mutations of real inputs (bit flips, byte overwrites, cuts, splices)
//! and random bytes, fed to each parser. Fixed seeds keep a failure reproducible;
//! the mutation count keeps the test under a second.

use std::path::Path;

use gapbundle::bundle::layout::parse_header;
use gapbundle::bundle::manifest::Manifest;
use gapbundle::bundle::reader::{read_head, verify_stream, NoSink};
use gapbundle::bundle::signature::Envelope;
use gapbundle::nixfmt::{parse_path_info, NarHash, StorePath};

/// xorshift64*: small, deterministic, good enough to pick positions and bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if v.is_empty() {
            break;
        }
        let at = rng.below(v.len());
        match rng.below(5) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v[at] = rng.next() as u8,
            2 => v.truncate(at),
            3 => {
                let len = rng.below(64);
                let junk = rng.bytes(len);
                v.splice(at..at, junk);
            }
            _ => {
                // Copy a run from elsewhere in the input: keeps the structure plausible.
                let from = rng.below(v.len());
                let len = rng.below(32).min(v.len() - from).min(v.len() - at);
                let run: Vec<u8> = v[from..from + len].to_vec();
                v[at..at + len].copy_from_slice(&run);
            }
        }
    }
    v
}

fn golden() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-spec/vectors/tiny/tiny.gapb"))
        .unwrap()
}

#[test]
fn damaged_bundles_are_refused_without_panicking() {
    let good = golden();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut refused = 0;
    for _ in 0..3000 {
        let bad = mutate(&mut rng, &good);
        let mut r = bad.as_slice();
        let outcome =
            read_head(&mut r).and_then(|head| verify_stream(&mut r, &head, &mut NoSink, |_| {}));
        if outcome.is_err() {
            refused += 1;
        }
    }
    // Nearly every mutation must be caught; a few land in bytes nothing reads
    // (padding after the end marker is allowed to be zeros, a cut after the marker).
    assert!(
        refused > 2900,
        "only {refused} of 3000 damaged bundles were refused"
    );
}

#[test]
fn head_parsers_survive_arbitrary_bytes() {
    let good = golden();
    let head = read_head(&mut good.as_slice()).unwrap();
    let envelope = head.envelope.to_canonical();
    let mut rng = Rng(42);
    for i in 0..4000 {
        let _ = Manifest::parse(&mutate(&mut rng, &head.manifest_bytes));
        let _ = Envelope::parse(&mutate(&mut rng, &envelope));
        let mut block = [0u8; 512];
        let src = if i % 2 == 0 {
            rng.bytes(512)
        } else {
            mutate(&mut rng, &good[..512])
        };
        let n = src.len().min(512);
        block[..n].copy_from_slice(&src[..n]);
        let _ = parse_header(&block);
        let n = rng.below(2048);
        let _ = read_head(&mut rng.bytes(n).as_slice());
    }
}

#[test]
fn spec_and_nix_parsers_survive_arbitrary_text() {
    let spec = b"name: edge\nversion: \"1\"\nplatforms: [linux/amd64]\nimages:\n  - ref: r.example/a/b:1\n  - layout: ./x:latest\n    name: a/b:c\nnix:\n  - installable: .#a\n    gcRoot: a\ncharts:\n  - path: ./c\n    values: {a: 1}\n";
    let path_info = br#"[{"path":"/nix/store/094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic-a","narHash":"sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=","narSize":120,"references":[],"signatures":[]}]"#;
    let mut rng = Rng(7);
    for _ in 0..3000 {
        let text = String::from_utf8_lossy(&mutate(&mut rng, spec)).into_owned();
        let _ = gapbundle::spec::parse(Path::new("bundle.yaml"), &text);
        let _ = parse_path_info(&mutate(&mut rng, path_info));
        let n = rng.below(80);
        let s = String::from_utf8_lossy(&rng.bytes(n)).into_owned();
        let _ = NarHash::parse(&s);
        let _ = StorePath::parse(&s);
        let _ = gapbundle::k8s::documents::split_documents(
            "fuzz",
            &mutate(&mut rng, spec),
            Some("default"),
        );
    }
}

#[test]
fn delta_and_inventory_parsers_survive_arbitrary_bytes() {
    use gapbundle::bundle::delta::check_full;
    use gapbundle::bundle::inventory::{Inventory, InventoryFile};
    use gapbundle::bundle::Digest;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-spec/vectors/delta");
    let delta = std::fs::read(dir.join("delta.gapb")).unwrap();
    let full = std::fs::read(dir.join("full.gapb")).unwrap();
    let d = read_head(&mut delta.as_slice()).unwrap();
    let f = read_head(&mut full.as_slice()).unwrap();
    let full_env = f.envelope.to_canonical();
    let mut inv = Inventory::new("site", 1);
    inv.bundles.push(gapbundle::bundle::inventory::BundleSeen {
        seen_in: "k3s-manifests".into(),
        name: "edge".into(),
        digest: Some(Digest::of(b"x")),
        version: None,
    });
    let inv_file = inv.to_file(&[]).unwrap();
    let inv_json = inv.to_canonical();
    let narinfo = b"StorePath: /nix/store/094qif9n4cq4fdg459qzbhg1c6wywaww-a\nURL: nar/x.nar.zst\nNarHash: sha256:1xga7qa3wjdkhc71mbz9wm36q1nl7z2c95sl9529vindmjnrdn0z\n";
    let mut rng = Rng(0xde17a);
    let mut refused = 0;
    for _ in 0..2000 {
        let _ = Manifest::parse(&mutate(&mut rng, &d.manifest_bytes));
        let _ = check_full(
            &d.manifest_bytes,
            &mutate(&mut rng, &f.manifest_bytes),
            &full_env,
        );
        let _ = check_full(
            &mutate(&mut rng, &d.manifest_bytes),
            &f.manifest_bytes,
            &full_env,
        );
        let _ = InventoryFile::parse(&mutate(&mut rng, &inv_file));
        let _ = InventoryFile::parse(&mutate(&mut rng, &inv_json));
        let text = String::from_utf8_lossy(&mutate(&mut rng, narinfo)).into_owned();
        let _ = gapbundle::nixfmt::NarInfoIdentity::parse(&text);
        let bad = mutate(&mut rng, &delta);
        let mut r = bad.as_slice();
        if read_head(&mut r)
            .and_then(|head| verify_stream(&mut r, &head, &mut NoSink, |_| {}))
            .is_err()
        {
            refused += 1;
        }
    }
    assert!(
        refused > 1900,
        "only {refused} of 2000 damaged deltas were refused"
    );
}
