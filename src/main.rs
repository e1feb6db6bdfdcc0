//! The `gapbundle` binary: parse, run, print the error chain, exit with the
//! documented code. Everything else lives in the library.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use gapbundle::cli::Cli;
use gapbundle::commands::report::print_error;
use gapbundle::commands::{self, exit};
use gapbundle::text::terminal_safe;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if !e.use_stderr() {
                // --help, --version: what was asked for, on stdout.
                let _ = e.print();
                return ExitCode::from(exit::OK);
            }
            if json_asked(std::env::args_os()) {
                print_error(exit::USAGE, &usage_message(&e));
            }
            let _ = e.print();
            return ExitCode::from(exit::USAGE);
        }
    };
    let json = cli.output.json;
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let chain: Vec<String> = f.error.chain().map(|c| c.to_string()).collect();
            if json {
                print_error(f.code, &chain.join(": "));
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

/// Whether `--json` is among the options (before any `--`), for a command line
/// clap refused: its caller still reads stdout as JSON.
fn json_asked(args: impl Iterator<Item = OsString>) -> bool {
    args.skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// clap's message without the `error: ` prefix, the usage and the tip.
fn usage_message(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered.split("\n\n").next().unwrap_or(&rendered);
    let text = first.strip_prefix("error: ").unwrap_or(first);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
