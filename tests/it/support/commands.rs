//! Running gapbundle and the real tools, and reading what they did: a missing
//! tool or a failing run panics with the command line, the exit status and both
//! outputs, so a failure says what happened without a rerun.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::INSTALL_HINT;

/// Path of the `gapbundle` binary built by cargo for this test run.
///
/// `CARGO_BIN_EXE_gapbundle` is set at compile time only for integration
/// tests (and benches), which is where this module is compiled, so a plain
/// function works; it would not compile if included from anywhere else.
pub fn gapbundle_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gapbundle"))
}

/// The repository's folder (where `Cargo.toml` is): examples, the bundle-spec,
/// the Nix files.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `Command` running the `gapbundle` binary under test. Its import receipts go
/// to a state folder of its own (`GAPBUNDLE_STATE_DIR`, under cargo's temporary
/// folder for this test binary): never to the machine's `/var/lib/gapbundle`, and
/// never shared with another test, whose imports of a bundle of the same name
/// would otherwise replace each other. A test that imports one bundle after
/// another passes `--state-dir` (as [`super::Work::import`] does).
pub fn gapbundle() -> Command {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let state = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "state/{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut c = Command::new(gapbundle_bin());
    c.env("GAPBUNDLE_STATE_DIR", state);
    c
}

/// `gapbundle create -f SPEC -o OUT --key KEY --cache CACHE`, the command line
/// most tests start from; callers add the rest (`--insecure-registry`,
/// `--quiet`, `--locked`, an environment).
pub fn create_cmd(spec: &Path, out: &Path, key: &Path, cache: &Path) -> Command {
    let mut c = create_unsigned_cmd(spec, out, cache);
    c.arg("--key").arg(key);
    c
}

/// [`create_cmd`] without `--key`: an unsigned bundle, or a run that fails
/// before signing matters.
pub fn create_unsigned_cmd(spec: &Path, out: &Path, cache: &Path) -> Command {
    let mut c = gapbundle();
    c.arg("create")
        .arg("-f")
        .arg(spec)
        .arg("-o")
        .arg(out)
        .arg("--cache")
        .arg(cache);
    c
}

// ---------------------------------------------------------------------------
// Running tools
// ---------------------------------------------------------------------------

/// Finds `name` on `PATH`. Panics loudly (naming the tool and
/// `scripts/install-test-deps`) if it is missing: tests never skip.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if let Ok(meta) = fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return candidate;
            }
        }
    }
    panic!(
        "\n\n*** required tool `{name}` is not on PATH ***\n\
         The gapbundle tests drive the real `{name}` and never skip.\n\
         Fix: {INSTALL_HINT}.\nPATH was: {}\n\n",
        path.to_string_lossy()
    );
}

/// A `Command` for the tool `name`, resolved with [`require_tool`].
pub fn tool(name: &str) -> Command {
    Command::new(require_tool(name))
}

/// Human-readable command line, for panic messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(arg));
    }
    s
}

fn shell_quote(arg: &OsStr) -> String {
    let a = arg.to_string_lossy();
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
    {
        a.into_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` to completion; `Err` carries the command line, exit status,
/// stdout and stderr when it cannot start or exits non-zero.
pub fn try_run(cmd: &mut Command) -> Result<Output, String> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not start `{line}`: {e}\n{INSTALL_HINT}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "`{line}` failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// Runs `cmd` and panics with its stdout and stderr unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    try_run(cmd).unwrap_or_else(|e| panic!("\n{e}\n"))
}

/// Runs `cmd` (must succeed) and returns its stdout as UTF-8.
pub fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("tool printed non-UTF-8 output")
}

/// Unpacks `bundle` (a tar file) into `into` with the real `tar`.
pub fn extract(bundle: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    run(tool("tar").arg("xf").arg(bundle).arg("-C").arg(into));
}

// ---------------------------------------------------------------------------
// Judging what a command did
// ---------------------------------------------------------------------------

/// The exit code of `o` (-1 when a signal ended it).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// What `o` wrote on stderr, as (lossy) text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit status, stdout and stderr of `o`, for a panic message.
pub fn output_text(o: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `o`, after checking that it succeeded (else a panic with its output).
pub fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "the command failed\n{}",
        output_text(&o)
    );
    o
}

/// Checks that `o` exited with `code` and returns its stderr, for the caller to
/// check what the error says.
pub fn fails(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", output_text(o));
    stderr(o)
}

/// The stdout of `o` as JSON (a panic with its output when it is not JSON).
pub fn json_stdout(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", output_text(o)))
}
