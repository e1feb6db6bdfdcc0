//! The `gapbundle` binary: parse, run, print the error chain, exit with the
//! documented code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use gapbundle::cli::Cli;
use gapbundle::commands::{self, exit};

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
            if is_broken_pipe(&f.error) {
                return ExitCode::SUCCESS;
            }
            let chain: Vec<String> = f.error.chain().map(|c| c.to_string()).collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "exitCode": f.code, "error": chain.join(": ")})
                );
            }
            eprintln!("error: {}", chain[0]);
            for c in &chain[1..] {
                eprintln!("  caused by: {c}");
            }
            ExitCode::from(f.code)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
