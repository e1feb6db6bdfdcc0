//! The one way we run `nix`, `helm` and `kubectl` (and [`nix_cmd`], Nix as both
//! sides run it).
//!
//! These tools are the real thing a user has, so we shell out instead of
//! re-implementing them, but their failures must still read like ours: the error
//! names the command line, the exit status and the tail of the tool's stderr, and a
//! missing tool says how to install it. stderr is drained on its own thread so a
//! chatty tool can never dead-lock against a full pipe while we stream its stdout.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

/// Lines of stderr kept for an error message.
const STDERR_TAIL: usize = 30;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program is not installed.
    #[error("`{program}` was not found on PATH: {hint}")]
    NotFound {
        /// The program.
        program: String,
        /// How to get it.
        hint: String,
    },
    /// It ran and failed.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The tail of its stderr.
        stderr: String,
    },
    /// It did not finish in time and was killed.
    #[error("`{command}` did not finish within {} s and was stopped:\n{stderr}", .after.as_secs())]
    TimedOut {
        /// The command line.
        command: String,
        /// How long it was given.
        after: std::time::Duration,
        /// The tail of its stderr.
        stderr: String,
    },
    /// It could not be started or read.
    #[error("`{command}`: {source}")]
    Io {
        /// The command line.
        command: String,
        /// The error.
        source: io::Error,
    },
}

impl crate::error::Classify for ProcessError {
    /// A tool that is missing or failed is any other error, unless the caller says
    /// what its failure means (a chart that cannot be rendered).
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}

/// What is told each line a command writes to stderr.
type LineSink = Box<dyn FnMut(&str) + Send>;

/// What is told how many bytes a running command has read.
type ReadSink = Box<dyn FnMut(u64) + Send>;

/// How often [`Cmd::on_bytes_read`] is told: a bar draws at most 20 times a second.
const READ_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// A command to run.
pub struct Cmd {
    inner: Command,
    program: String,
    hint: String,
    /// Bytes written to the command's stdin (a password for `--password-stdin`),
    /// which, unlike arguments, no other user can read from the process list.
    input: Option<Vec<u8>>,
    /// Told each line the command writes to stderr, as it comes (for progress).
    on_stderr_line: Option<LineSink>,
    /// Told the bytes the command has read, while it runs (for progress).
    on_bytes_read: Option<ReadSink>,
}

impl Cmd {
    /// `program`, with `hint` telling how to install it when it is missing.
    pub fn new(program: &str, hint: &str) -> Self {
        #[allow(
            clippy::disallowed_methods,
            reason = "this is the one place that builds a std::process::Command"
        )]
        let mut inner = Command::new(program);
        inner.stdin(Stdio::null());
        Self {
            inner,
            program: program.to_string(),
            hint: hint.to_string(),
            input: None,
            on_stderr_line: None,
            on_bytes_read: None,
        }
    }
    /// Gives the command `bytes` on stdin (by default it reads nothing). They are
    /// never shown: not in [`Cmd::display`], not in errors.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.input = Some(bytes.into());
        self
    }
    /// Calls `f` with each line the command writes to stderr while it runs (the
    /// error report still gets the tail).
    pub fn on_stderr_line(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stderr_line = Some(Box::new(f));
        self
    }
    /// Calls `f` about twenty times a second while [`Cmd::output`] runs the command,
    /// with the bytes it has read so far: the `rchar` of Linux's `/proc/PID/io`
    /// (files, pipes and sockets; not mapped files). Where `/proc` does not say,
    /// `f` is never called. For a tool that names its work but not its bytes (Nix
    /// copying from a `file://` cache), this is how far it has got.
    pub fn on_bytes_read(mut self, f: impl FnMut(u64) + Send + 'static) -> Self {
        self.on_bytes_read = Some(Box::new(f));
        self
    }
    /// Adds an argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.inner.arg(a);
        self
    }
    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, a: I) -> Self {
        self.inner.args(a);
        self
    }
    /// Sets an environment variable.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.inner.env(k, v);
        self
    }
    /// Sets the working directory.
    pub fn current_dir(mut self, d: impl AsRef<Path>) -> Self {
        self.inner.current_dir(d);
        self
    }

    /// The command line as a person would type it.
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in self.inner.get_args() {
            let a = a.to_string_lossy();
            s.push(' ');
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+#%".contains(c))
                && !a.is_empty()
            {
                s.push_str(&a);
            } else {
                s.push('\'');
                s.push_str(&a.replace('\'', r"'\''"));
                s.push('\'');
            }
        }
        s
    }

    fn start(mut self, stdout: Stdio) -> Result<(Child, String, JoinHandle<String>), ProcessError> {
        let command = self.display();
        if std::env::var_os("GAPBUNDLE_LOG_COMMANDS").is_some() {
            eprintln!("+ {command}");
        }
        if self.input.is_some() {
            self.inner.stdin(Stdio::piped());
        }
        let mut child = self
            .inner
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    ProcessError::NotFound {
                        program: self.program.clone(),
                        hint: self.hint.clone(),
                    }
                } else {
                    ProcessError::Io {
                        command: command.clone(),
                        source: e,
                    }
                }
            })?;
        // Only with input: a caller that streams stdin itself (`feed`) keeps it.
        let input = self
            .input
            .take()
            .and_then(|b| Some((b, child.stdin.take()?)));
        if let Some((bytes, mut stdin)) = input {
            // On its own thread, so a tool that prints before it reads cannot
            // dead-lock against us; a tool that exits without reading is its own
            // error, reported by its exit status.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            });
        }
        let mut err = child.stderr.take().expect("stderr is piped");
        let mut on_line = self.on_stderr_line.take();
        let drain = std::thread::spawn(move || {
            let mut buf = Vec::new();
            match on_line.as_mut() {
                None => {
                    let _ = err.read_to_end(&mut buf);
                }
                Some(f) => {
                    let mut r = io::BufReader::new(err);
                    let mut line = Vec::new();
                    while matches!(io::BufRead::read_until(&mut r, b'\n', &mut line), Ok(n) if n > 0)
                    {
                        f(String::from_utf8_lossy(&line).trim_end());
                        buf.extend_from_slice(&line);
                        line.clear();
                    }
                }
            }
            tail(&String::from_utf8_lossy(&buf))
        });
        Ok((child, command, drain))
    }

    /// Runs to completion and returns stdout.
    pub fn output(mut self) -> Result<Vec<u8>, ProcessError> {
        let watch = self.on_bytes_read.take();
        let (mut child, command, drain) = self.start(Stdio::piped())?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let (read, status, out) = match watch {
            None => {
                let mut out = Vec::new();
                let read = stdout.read_to_end(&mut out);
                (read, child.wait(), out)
            }
            Some(mut told) => {
                let reader = std::thread::spawn(move || {
                    let mut out = Vec::new();
                    stdout.read_to_end(&mut out).map(|_| out)
                });
                // Read before each `try_wait`: until it reaps the child, the pid is
                // still the child's, never another process's.
                let pid = child.id();
                let status = loop {
                    if let Some(n) = bytes_read(pid) {
                        told(n);
                    }
                    match child.try_wait() {
                        Ok(Some(s)) => break Ok(s),
                        Ok(None) => std::thread::sleep(READ_POLL),
                        Err(e) => break Err(e),
                    }
                };
                let (read, out) = match reader.join() {
                    Ok(Ok(out)) => (Ok(0), out),
                    Ok(Err(e)) => (Err(e), Vec::new()),
                    Err(_) => (
                        Err(io::Error::other("the stdout reader panicked")),
                        Vec::new(),
                    ),
                };
                (read, status, out)
            }
        };
        let stderr = drain.join().unwrap_or_default();
        let status = status.map_err(|e| ProcessError::Io {
            command: command.clone(),
            source: e,
        })?;
        read.map_err(|e| ProcessError::Io {
            command: command.clone(),
            source: e,
        })?;
        if !status.success() {
            return Err(ProcessError::Failed {
                command,
                status: status.to_string(),
                stderr,
            });
        }
        Ok(out)
    }

    /// Starts the command with stdout to be streamed; call [`Running::finish`] after
    /// reading it to check the exit status.
    pub fn stream(self) -> Result<Running, ProcessError> {
        let (mut child, command, drain) = self.start(Stdio::piped())?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(Running {
            child,
            stdout,
            command,
            drain: Some(drain),
        })
    }
}

impl Cmd {
    /// Starts the command with pipes to its stdin and from its stdout, for a
    /// caller that talks a protocol with it (`nix-store --serve`). Close it with
    /// [`Session::finish`] (or drop it to cut the conversation short: the command
    /// then sees its input end early).
    pub fn session(mut self) -> Result<Session, ProcessError> {
        self.input = None;
        self.inner.stdin(Stdio::piped());
        let (mut child, command, drain) = self.start(Stdio::piped())?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        // Only speed depends on it: a pipe stays at 64 KiB where Linux refuses more
        // (above /proc/sys/fs/pipe-max-size, or past the user's pipe quota).
        let _ = rustix::pipe::fcntl_setpipe_size(&stdin, SESSION_PIPE);
        Ok(Session {
            child,
            stdin: Some(stdin),
            stdout: Some(stdout),
            command,
            drain: Some(drain),
        })
    }
}

/// The size asked of the pipe to a session's stdin: 1 MiB, the most Linux gives an
/// unprivileged process by default (`/proc/sys/fs/pipe-max-size`). The Nix import
/// streams every NAR through it (`import::nix::stream`); at the default 64 KiB
/// each side woke the other some 16 times per MiB, and on two cores the wakeups
/// (`_raw_spin_unlock_irqrestore` under the pipe's read and write, 9% of an
/// import's samples) were time neither process worked: a 331-path, 548 MiB import
/// took 2.2 to 2.9 s with it against 2.8 to 3.6 s without (docs/benchmarks.md).
const SESSION_PIPE: usize = 1 << 20;

/// A running command that is written to and read from (see [`Cmd::session`]).
pub struct Session {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: Option<ChildStdout>,
    command: String,
    drain: Option<JoinHandle<String>>,
}

impl Session {
    /// Its stdin and its stdout, to write to and read from at once (a write fails,
    /// and a read ends, once the command has exited).
    pub fn pipes(&mut self) -> (&mut std::process::ChildStdin, &mut ChildStdout) {
        (
            self.stdin.as_mut().expect("open until finish"),
            self.stdout.as_mut().expect("open until finish"),
        )
    }

    /// The command line, for messages.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Closes its stdin, waits for the exit and turns a failure into an error with
    /// stderr.
    pub fn finish(mut self) -> Result<(), ProcessError> {
        drop(self.stdin.take());
        drop(self.stdout.take());
        wait_for(&mut self.child, &self.command, self.drain.take())
    }
}

impl Drop for Session {
    /// Cut short: stdin closes mid-conversation and the command is waited for, so
    /// no zombie is left and it has stopped by the time the caller reports.
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            drop(self.stdout.take());
            let _ = self.child.wait();
        }
    }
}

/// How a command run by [`Cmd::run`] ended, for callers that judge its exit
/// status themselves (a credential helper that says "not found" with exit code 1).
#[derive(Debug)]
pub struct Finished {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its exit status, as text.
    pub status: String,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// The tail of its stderr.
    pub stderr: String,
}

impl Cmd {
    /// Runs to completion and returns what it printed, whatever its exit status;
    /// after `timeout` it is killed and [`ProcessError::TimedOut`] returned.
    pub fn run(self, timeout: std::time::Duration) -> Result<Finished, ProcessError> {
        let (mut child, command, drain) = self.start(Stdio::piped())?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out).map(|_| out)
        });
        let deadline = std::time::Instant::now() + timeout;
        let io_err = |source| ProcessError::Io {
            command: command.clone(),
            source,
        };
        let status = loop {
            if let Some(s) = child.try_wait().map_err(io_err)? {
                break s;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProcessError::TimedOut {
                    command: command.clone(),
                    after: timeout,
                    stderr: drain.join().unwrap_or_default(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let stdout = reader
            .join()
            .unwrap_or_else(|_| Ok(Vec::new()))
            .map_err(io_err)?;
        Ok(Finished {
            success: status.success(),
            status: status.to_string(),
            stdout,
            stderr: drain.join().unwrap_or_default(),
        })
    }
}

/// A running command whose stdout is being read.
pub struct Running {
    child: Child,
    /// Its stdout.
    pub stdout: ChildStdout,
    command: String,
    drain: Option<JoinHandle<String>>,
}

impl Running {
    /// Waits for the exit and turns a failure into an error with stderr.
    pub fn finish(mut self) -> Result<(), ProcessError> {
        wait_for(&mut self.child, &self.command, self.drain.take())
    }
}

impl Read for Running {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.drain.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` (`command`) to exit, then for its stderr `drain`, and turns a
/// failure into an error with the tail of that stderr.
fn wait_for(
    child: &mut Child,
    command: &str,
    drain: Option<JoinHandle<String>>,
) -> Result<(), ProcessError> {
    let status = child.wait().map_err(|e| ProcessError::Io {
        command: command.to_string(),
        source: e,
    })?;
    let stderr = drain.and_then(|d| d.join().ok()).unwrap_or_default();
    if !status.success() {
        return Err(ProcessError::Failed {
            command: command.to_string(),
            status: status.to_string(),
            stderr,
        });
    }
    Ok(())
}

/// The bytes process `pid` has read (`rchar` in `/proc/PID/io`), if Linux says.
fn bytes_read(pid: u32) -> Option<u64> {
    let io = fs_err::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|n| n.trim().parse().ok())
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(STDERR_TAIL);
    lines[start..].join("\n")
}

/// What to tell someone without Nix.
pub const NIX_HINT: &str =
    "install Nix (Debian: `apt-get install nix-bin`; elsewhere https://nixos.org/download)";

/// A `nix`, `nix-store` … command (create and import run the same Nix the same way). Flakes and the `nix` command are experimental in
/// Nix 2.8: unless the user's `NIX_CONFIG` already says something about
/// `experimental-features`, `extra-experimental-features = nix-command flakes` is
/// appended to it (extra- adds to what nix.conf enables instead of replacing it).
pub fn nix_cmd(program: &str) -> Cmd {
    let cmd = Cmd::new(program, NIX_HINT);
    match std::env::var("NIX_CONFIG") {
        Ok(c) if c.contains("experimental-features") => cmd,
        Ok(c) => cmd.env(
            "NIX_CONFIG",
            format!("{c}\nextra-experimental-features = nix-command flakes"),
        ),
        Err(_) => cmd.env(
            "NIX_CONFIG",
            "extra-experimental-features = nix-command flakes",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_stderr_and_missing_tools_a_hint() {
        let e = Cmd::new("sh", "")
            .args(["-c", "echo out; echo oops >&2; exit 3"])
            .output()
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("sh -c 'echo out; echo oops >&2; exit 3'"),
            "{msg}"
        );
        assert!(
            msg.contains("oops") && msg.contains("exit status: 3"),
            "{msg}"
        );
        let e = Cmd::new("gapbundle-no-such-tool", "install it with apt")
            .output()
            .unwrap_err();
        assert!(e.to_string().contains("install it with apt"));
    }

    #[test]
    fn a_sessions_stdin_is_a_pipe_of_a_mebibyte_where_linux_gives_one() {
        let mut s = Cmd::new("cat", "").session().unwrap();
        let (stdin, _) = s.pipes();
        let size = rustix::pipe::fcntl_getpipe_size(&*stdin).unwrap();
        let max: usize = fs_err::read_to_string("/proc/sys/fs/pipe-max-size")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // (root may go past the maximum)
        assert!(size >= SESSION_PIPE.min(max), "{size}");
        s.finish().unwrap();
    }

    #[test]
    fn stdin_reaches_the_command_but_not_its_command_line() {
        let cmd = Cmd::new("sh", "")
            .args(["-c", "read -r p; echo \"got $p\""])
            .stdin("s3cret\n");
        assert!(!cmd.display().contains("s3cret"));
        assert_eq!(cmd.output().unwrap(), b"got s3cret\n");
    }

    #[test]
    fn stderr_lines_are_seen_as_they_come_and_failures_keep_them() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let e = Cmd::new("sh", "")
            .args([
                "-c",
                "echo one >&2; echo out; printf 'two\\nthree' >&2; exit 3",
            ])
            .on_stderr_line(move |l| s.lock().unwrap().push(l.to_string()))
            .output()
            .unwrap_err()
            .to_string();
        assert_eq!(*seen.lock().unwrap(), ["one", "two", "three"]);
        assert!(e.contains("one") && e.contains("three"), "{e}");
    }

    #[test]
    fn the_bytes_a_command_reads_are_told_while_it_runs() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        // Reads 40 MiB in 4 MiB steps, a fifth of a second apart, then exits.
        Cmd::new("python3", "")
            .args([
                "-c",
                "import time\nwith open('/dev/zero', 'rb') as f:\n  for _ in range(10):\n    f.read(4 << 20); time.sleep(0.2)",
            ])
            .on_bytes_read(move |n| s.lock().unwrap().push(n))
            .output()
            .unwrap();
        let seen = seen.lock().unwrap();
        let mib = |n: &u64| *n >> 20;
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert!(
            seen.iter().any(|n| (8..32).contains(&mib(n))),
            "a count on the way: {seen:?}"
        );
        // The last look is after the exit, before the child is reaped.
        assert!(seen.last().is_some_and(|n| mib(n) >= 40), "{seen:?}");
    }

    #[test]
    fn run_returns_output_whatever_the_status_and_stops_at_the_timeout() {
        let f = Cmd::new("sh", "")
            .args(["-c", "read -r x; echo \"out $x\"; echo err >&2; exit 1"])
            .stdin("in\n")
            .run(std::time::Duration::from_secs(20))
            .unwrap();
        assert!(!f.success);
        assert_eq!(
            (f.stdout.as_slice(), f.stderr.as_str()),
            (&b"out in\n"[..], "err")
        );
        let started = std::time::Instant::now();
        let e = Cmd::new("sh", "")
            .args(["-c", "echo slow >&2; exec sleep 30"])
            .run(std::time::Duration::from_millis(300))
            .unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert!(
            matches!(e, ProcessError::TimedOut { ref stderr, .. } if stderr == "slow"),
            "{e}"
        );
    }

    #[test]
    fn streaming_reads_stdout_and_checks_status() {
        let mut r = Cmd::new("sh", "")
            .args(["-c", "head -c 300000 /dev/zero; echo done >&2"])
            .stream()
            .unwrap();
        let mut n = 0;
        let mut buf = [0u8; 8192];
        loop {
            let k = r.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            n += k;
        }
        assert_eq!(n, 300000);
        r.finish().unwrap();
    }
}
