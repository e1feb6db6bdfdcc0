//! The only place that draws progress.
//!
//! Operators watch bars on a terminal; CI logs want one plain line per finished
//! transfer; `--quiet` and `--json` want nothing on stderr but errors. Keeping that
//! decision here means no other module ever prints progress itself. Every message
//! and label goes through [`crate::text::terminal_safe`]: they often name things a
//! bundle named.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::text::terminal_safe;

#[derive(Clone)]
enum Mode {
    Bars(MultiProgress),
    Lines,
    Quiet,
}

/// Progress reporting for one command.
#[derive(Clone)]
pub struct Progress {
    mode: Mode,
}

impl Progress {
    /// Bars on a terminal, lines otherwise, nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(MultiProgress::with_draw_target(
                ProgressDrawTarget::stderr_with_hz(10),
            ))
        } else {
            Mode::Lines
        };
        Self { mode }
    }

    /// A reporter that prints nothing.
    pub fn quiet() -> Self {
        Self { mode: Mode::Quiet }
    }

    /// A status line (not drawn when quiet).
    pub fn message(&self, msg: impl AsRef<str>) {
        let msg = terminal_safe(msg.as_ref());
        match &self.mode {
            Mode::Bars(m) => {
                let _ = m.println(msg.as_ref());
            }
            Mode::Lines => eprintln!("{}", msg.as_ref()),
            Mode::Quiet => {}
        }
    }

    /// A warning: shown even when quiet, since it asks the user to act.
    pub fn warn(&self, msg: impl AsRef<str>) {
        let msg = terminal_safe(msg.as_ref());
        match &self.mode {
            Mode::Bars(m) => {
                let _ = m.println(format!("warning: {}", msg.as_ref()));
            }
            _ => eprintln!("warning: {}", msg.as_ref()),
        }
    }

    /// A byte-counting bar for one transfer of `total` bytes.
    pub fn bar(&self, label: impl Into<String>, total: u64) -> Bar {
        let label = terminal_safe(&label.into()).into_owned();
        let inner = match &self.mode {
            Mode::Bars(m) => {
                let pb = m.add(ProgressBar::new(total));
                pb.set_style(
                    ProgressStyle::with_template(
                        "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                );
                pb.set_message(label.clone());
                pb.enable_steady_tick(Duration::from_millis(200));
                Some(pb)
            }
            _ => None,
        };
        Bar {
            inner,
            label,
            total,
            lines: matches!(self.mode, Mode::Lines),
        }
    }
}

/// One transfer's bar. Cheap to clone and safe to share between threads.
#[derive(Clone)]
pub struct Bar {
    inner: Option<ProgressBar>,
    label: String,
    total: u64,
    lines: bool,
}

impl Bar {
    /// Adds transferred bytes.
    pub fn inc(&self, n: u64) {
        if let Some(pb) = &self.inner {
            pb.inc(n);
        }
    }
    /// Sets the position (after a resume or a restart).
    pub fn set_position(&self, n: u64) {
        if let Some(pb) = &self.inner {
            pb.set_position(n);
        }
    }
    /// Removes the bar without a line: for a whole-command bar whose result the
    /// command prints itself.
    pub fn clear(&self) {
        if let Some(pb) = &self.inner {
            pb.finish_and_clear();
        }
    }

    /// Marks the transfer done; in line mode prints one line.
    pub fn finish(&self, verb: &str) {
        if let Some(pb) = &self.inner {
            pb.finish_and_clear();
        }
        if self.lines {
            eprintln!("{verb} {} ({})", self.label, human_bytes(self.total));
        }
    }
}

/// `1.5 MiB`-style sizes for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
