//! `nexus-packaging assets DIR`: what the Debian packages hold besides the binaries, made from the
//! commands' own clap definitions so that they never drift from the flags: a man page for each
//! program and for each of the CLI's subcommands (`nexus-workspace-create.1`, as git names
//! them), and the CLI's completions for bash, zsh and fish. `deploy/packages/build.sh` runs it
//! and cargo-deb packs what it writes (each crate's `[package.metadata.deb]`), each package the
//! pages of its own program (`man/PROGRAM/`).
//!
//! The home of `clap_mangen`.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

// A command-line tool: it reports on standard output and error.
#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [command, dir] if command == "assets" => {
            let written = write_assets(Path::new(dir))?;
            println!("{written} files in {dir}");
            Ok(())
        }
        _ => {
            eprintln!("usage: nexus-packaging assets DIR");
            std::process::exit(2)
        }
    }
}

/// The programs, as their command lines define them.
fn programs() -> [clap::Command; 3] {
    [
        nexus_cli::args::Cli::command(),
        nexus_coordinator::config::Cli::command(),
        nexus_agent::config::Args::command(),
    ]
}

/// Writes `DIR/man/PROGRAM/*.1` and `DIR/completions/{nexus.bash,_nexus,nexus.fish}`; how many
/// files.
fn write_assets(dir: &Path) -> anyhow::Result<usize> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for made in [&man, &completions] {
        std::fs::create_dir_all(made).with_context(|| format!("cannot make {}", made.display()))?;
    }
    let mut written = 0;
    for program in programs() {
        // A directory per program, so that each package takes its own pages.
        let pages = man.join(program.get_name());
        std::fs::create_dir_all(&pages)
            .with_context(|| format!("cannot make {}", pages.display()))?;
        written += write_pages(&pages, program)?;
    }
    for (shell, file) in [
        (clap_complete::Shell::Bash, "nexus.bash"),
        (clap_complete::Shell::Zsh, "_nexus"),
        (clap_complete::Shell::Fish, "nexus.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(
            shell,
            &mut nexus_cli::args::Cli::command(),
            "nexus",
            &mut out,
        );
        write(&completions.join(file), &out)?;
        written += 1;
    }
    Ok(written)
}

/// The page of `command` and of each of its subcommands, named `PROGRAM-SUB-SUB.1`.
fn write_pages(dir: &Path, command: clap::Command) -> anyhow::Result<usize> {
    let mut command = command;
    command.build();
    let mut pending = vec![command];
    let mut written = 0;
    while let Some(command) = pending.pop() {
        let name = command
            .get_display_name()
            .unwrap_or_else(|| command.get_name())
            .to_string();
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone())
            .title(name.to_uppercase())
            .render(&mut page)
            .with_context(|| format!("cannot render the page of {name}"))?;
        write(&dir.join(format!("{name}.1")), &page)?;
        written += 1;
        for sub in command.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let sub = sub
                .clone()
                .display_name(format!("{name}-{}", sub.get_name()));
            pending.push(sub);
        }
    }
    Ok(written)
}

fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}
