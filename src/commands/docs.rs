//! `gapbundle completions` and `gapbundle man`: shell integration generated from the
//! clap definitions in `cli/`, so completions and man pages can never drift from the
//! flags the binary really accepts. Packagers run these at build time (the flake
//! installs both); users can run them by hand.
//!
//! Both render into memory first and then write, so a closed pipe (`| head`) is an
//! ordinary I/O error that `main` exits quietly on, not a panic inside a generator.

use clap::CommandFactory;
use fs_err as fs;

use super::report::ManReport;
use super::{print_json, say_bytes, Failure};
use crate::cli::{Cli, CompletionsArgs, ManArgs, OutputArgs};

/// Prints the completion script for one shell on stdout.
pub fn completions(a: CompletionsArgs) -> Result<(), Failure> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "gapbundle", &mut buf);
    say_bytes(&buf);
    Ok(())
}

/// Prints `gapbundle.1` on stdout, or writes every page into `--dir`.
pub fn man(a: ManArgs, out: &OutputArgs) -> Result<(), Failure> {
    let cmd = Cli::command();
    let Some(dir) = a.dir else {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        say_bytes(&buf);
        return Ok(());
    };
    fs::create_dir_all(&dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    collect_pages(&cmd, &mut pages);
    let mut written = Vec::new();
    for page in pages {
        let man = clap_mangen::Man::new(page);
        let path = dir.join(man.get_filename());
        let mut buf = Vec::new();
        man.render(&mut buf)?;
        crate::io::atomic::write(&path, &buf)?;
        written.push(path);
    }
    if out.json {
        print_json(&ManReport {
            ok: true,
            pages: written,
        });
    } else if !out.quiet {
        for p in &written {
            say!("{}", p.display());
        }
    }
    Ok(())
}

/// The command and every visible subcommand, depth first, parents before children.
fn collect_pages(cmd: &clap::Command, pages: &mut Vec<clap::Command>) {
    pages.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect_pages(sub, pages);
    }
}
