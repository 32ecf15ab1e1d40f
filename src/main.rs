//! The `kmsgfs` command: a thin dispatcher into the library.

use clap::{Parser, Subcommand};

/// Per-container kernel logs.
#[derive(Debug, Parser)]
#[command(name = "kmsgfs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every namespace's ring as a /dev/kmsg-compatible FUSE file under DIR.
    Serve(kmsgfs::daemon::ServeArgs),
    /// Run a command in new namespaces with DIR/kmsg bound over /dev/kmsg.
    Run(kmsgfs::frontends::run::RunArgs),
    /// Print the OCI seccomp profile that routes syslog(2) to the kmsgfs agent.
    SeccompProfile {
        /// The agent's socket (`kmsgfs serve --seccomp-socket`).
        #[arg(long, value_name = "PATH", default_value = kmsgfs::frontends::seccomp::DEFAULT_LISTENER_PATH)]
        listener: std::path::PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = kmsgfs::frontends::fuse::interrupt::install_logger() {
        eprintln!("kmsgfs: cannot install logger: {e}");
    }
    let result = match cli.command {
        Command::Serve(args) => kmsgfs::daemon::serve(args),
        Command::Run(args) => std::process::exit(kmsgfs::frontends::run::main(&args)),
        Command::SeccompProfile { listener } => {
            print!(
                "{}",
                kmsgfs::frontends::seccomp::seccomp_profile_json(&listener)
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("kmsgfs: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
