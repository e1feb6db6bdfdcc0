//! Docker and OCI archive sniffing (`archive:` images in a spec): an arbitrary file
//! is refused with an error, never a panic, a hang or an allocation it does not
//! declare. The bytes go through a real file, as the resolver seeks in one.
#![no_main]

use std::sync::OnceLock;

use gapbundle::io::cas::Cas;
use gapbundle::resolve::archive::resolve_archive;
use gapbundle::spec::Platforms;
use libfuzzer_sys::fuzz_target;

struct Scratch {
    dir: tempfile::TempDir,
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| Scratch {
        dir: tempfile::tempdir().unwrap(),
    })
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    let file = s.dir.path().join("input.tar");
    std::fs::write(&file, data).unwrap();
    let cas_dir = s.dir.path().join("cas");
    let cas = Cas::open(&cas_dir).unwrap();
    let _ = resolve_archive(&cas, &file, None, &Platforms::All);
    // Blobs it copied must not pile up over millions of runs.
    let _ = std::fs::remove_dir_all(&cas_dir);
});
