//! The `gapbundle` binary: parse, run, print the error chain, exit with the
//! documented code. Everything else lives in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use gapbundle::cli::Cli;
use gapbundle::commands::{self, exit};
use gapbundle::text::terminal_safe;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let json = cli.output.json;
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let chain: Vec<String> = f.error.chain().map(|c| c.to_string()).collect();
            if json {
                // Not `say!`: a gone reader must not turn the failure into success.
                let _ = writeln!(
                    std::io::stdout(),
                    "{}",
                    serde_json::json!({"ok": false, "exitCode": f.code, "error": chain.join(": ")})
                );
            }
            // Messages name what a bundle named; whatever was not escaped where it
            // was put in is escaped here, but for line breaks (a tool's output, a
            // list): every line after the first is indented, so no text in an error
            // can pass for a line of output of its own (`OK … signed by …`).
            let shown = |s: &str| terminal_safe(s).replace('\n', "\n    ");
            eprintln!("error: {}", shown(&chain[0]));
            for c in &chain[1..] {
                eprintln!("  caused by: {}", shown(c));
            }
            ExitCode::from(f.code)
        }
    }
}
