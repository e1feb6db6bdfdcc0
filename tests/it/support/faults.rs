//! Killing a command at a moment chosen by watching what it does (bytes in a
//! target, a file appearing), never after a sleep alone; and checking what it
//! left behind in the folders it may use for temporary files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a kill test waits for the moment it wants to kill at.
const KILL_POINT_TIMEOUT: Duration = Duration::from_secs(60);

/// `cmd` started with stdout and stderr thrown away (a killed run's output says
/// nothing) and stdin as the caller set it.
pub fn spawn_quiet(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", super::describe(cmd)))
}

/// Polls `reached` until it holds, then kills `child` with SIGKILL and reaps it.
/// Returns false when the child ended by itself first (it finished before the
/// moment came, which a timing-based kill point may miss: the caller retries or
/// fails); panics when neither happens within a minute.
pub fn kill_when(child: &mut Child, what: &str, mut reached: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + KILL_POINT_TIMEOUT;
    loop {
        if reached() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap the killed child");
            return true;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            eprintln!("the command ended ({status}) before {what}");
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened within {KILL_POINT_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes `bytes` into the child's stdin and keeps the pipe open (returned), so
/// the command blocks once it has read them: a kill point in the middle of a
/// stream that does not depend on timing.
pub fn feed_part(child: &mut Child, bytes: &[u8]) -> std::process::ChildStdin {
    let mut stdin = child.stdin.take().expect("stdin was piped");
    stdin.write_all(bytes).expect("feed the command");
    stdin.flush().unwrap();
    stdin
}

/// A private `$TMPDIR` for one test (inside its work folder), so that "nothing
/// left in temp" is checkable.
pub fn private_tmp(root: &Path) -> PathBuf {
    let t = root.join("tmp");
    fs::create_dir_all(&t).unwrap();
    t
}

/// The entries of `dir` (recursively, relative paths), for messages.
pub fn tree_of(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// Panics unless `dir` is empty (or absent), listing what is there.
pub fn assert_nothing_left(dir: &Path, what: &str) {
    let left = tree_of(dir);
    assert!(
        left.is_empty(),
        "{what} ({}) holds {left:#?}",
        dir.display()
    );
}

/// Names in `dir` (not recursive) that look like a temporary file or folder: a
/// leading `.` with `tmp` in the name, or gapbundle's own temporary prefix.
pub fn temp_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    (n.starts_with('.') && n.contains("tmp")) || n.starts_with(".gapbundle")
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Puts a `tool` in `bin` in front of the real one (found on `PATH` now): a shell
/// script that runs `script` first, then the real tool with the same arguments.
/// Returns a `PATH` with `bin` first. For faults no real service makes on cue (a
/// file that changes between two steps, a subcommand that fails).
pub fn wrap_tool(bin: &Path, tool: &str, script: &str) -> String {
    fs::create_dir_all(bin).unwrap();
    let real = super::run_stdout(Command::new("sh").args(["-c", &format!("command -v {tool}")]));
    let wrapper = bin.join(tool);
    fs::write(
        &wrapper,
        format!("#!/bin/sh\n{script}\nexec {} \"$@\"\n", real.trim()),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

/// A shell command that flips the byte at `at` of `file` (exit 99 if it cannot).
pub fn flip_byte_command(file: &Path, at: u64) -> String {
    format!(
        "python3 -c 'import sys; f = open(sys.argv[1], \"r+b\"); f.seek(int(sys.argv[2])); b = f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 1]))' {} {at} || exit 99",
        file.display()
    )
}
