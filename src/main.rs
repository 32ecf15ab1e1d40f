//! The `kmsgfs` command.

use clap::{Parser, Subcommand};

/// Per-container kernel logs.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a command in new namespaces with DIR/kmsg bound over /dev/kmsg.
    Run(kmsgfs::frontends::run::RunArgs),
}

fn main() {
    env_logger::init();
    log::info!("kmsgfs {}", env!("CARGO_PKG_VERSION"));
    match Cli::parse().command {
        Cmd::Run(args) => std::process::exit(kmsgfs::frontends::run::main(&args)),
    }
}
