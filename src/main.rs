//! The `kmsgfs` command: a thin dispatcher into the library.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};

/// Per-container kernel logs.
#[derive(Debug, Parser)]
#[command(
    name = "kmsgfs",
    version,
    about,
    long_about = "Per-container kernel logs.\n\n\
        `kmsgfs serve --mount /run/kmsgfs` mounts a FUSE filesystem whose `kmsg` file gives \
        every network namespace (by default) its own kernel log ring with the semantics of \
        /dev/kmsg. Bind /run/kmsgfs/kmsg over /dev/kmsg in a container (`kmsgfs run`, \
        `kmsgfs oci-hook`, or a runtime's mount list) and the container's `dmesg` shows its \
        own records only.\n\n\
        Start with `kmsgfs demo` (as root) to see it work."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every namespace's ring as a /dev/kmsg-compatible FUSE file under DIR.
    #[command(
        long_about = "Serve every namespace's ring as a /dev/kmsg-compatible FUSE file.\n\n\
        Runs in the foreground until SIGINT or SIGTERM. Needs root (or CAP_SYS_ADMIN) and \
        /dev/fuse. Files under DIR: `kmsg` (the opener's ring), `stats` (JSON counters, host \
        root only), `metrics` (the same counters in Prometheus text format), `ns/<inode>/kmsg` \
        (each ring, for host root). The syslog(2) agent listens for OCI runtimes' seccomp \
        listeners on DIR.seccomp.sock (see `kmsgfs seccomp-profile`).\n\n\
        Example: mkdir -p /run/kmsgfs && kmsgfs serve --mount /run/kmsgfs"
    )]
    Serve(kmsgfs::cli::serve::ServeArgs),
    /// Run a command in new namespaces with DIR/kmsg bound over /dev/kmsg.
    #[command(
        long_about = "Run a command in new namespaces with DIR/kmsg bound over /dev/kmsg.\n\n\
        A minimal container for trying kmsgfs: fresh mount, network, UTS, IPC and PID \
        namespaces (see --unshare), the kmsgfs file at /dev/kmsg, and an init process that \
        forwards signals. Needs root and a running `kmsgfs serve`.\n\n\
        Example: kmsgfs run -- sh -c 'echo hello > /dev/kmsg; dmesg'"
    )]
    Run(kmsgfs::cli::run::RunArgs),
    /// Print the OCI seccomp profile that routes syslog(2) to the kmsgfs agent.
    #[command(
        long_about = "Print the OCI seccomp profile that routes syslog(2) to the kmsgfs agent.\n\n\
        The profile maps syslog to SCMP_ACT_NOTIFY and names the agent's socket in \
        listenerPath; give it to runc, crun, Podman, Docker or a Kubernetes Localhost profile \
        (docs/deploy.md). It allows every other system call: merge it into your runtime's \
        default profile to keep that profile's restrictions, and remove every other rule that \
        names syslog.\n\n\
        Example: kmsgfs seccomp-profile > /etc/kmsgfs/seccomp.json"
    )]
    SeccompProfile {
        /// The agent's socket (`kmsgfs serve --seccomp-socket`).
        #[arg(long, value_name = "PATH", default_value = kmsgfs::frontends::seccomp::DEFAULT_LISTENER_PATH)]
        listener: std::path::PathBuf,
    },
    /// Show two throwaway containers, each with its own kernel log, next to the host's.
    #[command(
        long_about = "Show two throwaway containers, each with its own kernel log.\n\n\
        Uses the daemon on --mount, or starts one on a temporary directory; starts two \
        containers with `kmsgfs run`, joins them with a veth pair inside their own network \
        namespaces, writes a line into each one's /dev/kmsg, and prints side by side what \
        `dmesg` shows in each and on the host; then clears one with `dmesg -c` (when the \
        syslog(2) agent serves it) and shows the other untouched. Cleans up everything, also \
        on Ctrl-C. Needs root. Exits non-zero if a check fails."
    )]
    Demo(kmsgfs::cli::demo::DemoArgs),
    /// OCI createContainer hook: bind DIR/kmsg over the container's /dev/kmsg.
    #[command(
        long_about = "OCI createContainer hook: bind DIR/kmsg over the container's /dev/kmsg.\n\n\
        Reads the OCI state JSON on stdin, as runc, crun, Podman and CRI-O pass it, enters the \
        container's mount namespace and bind-mounts DIR/kmsg over <rootfs>/dev/kmsg, and \
        DIR/proc-kmsg over <rootfs>/proc/kmsg when the daemon serves it. Install \
        docs/deploy/hooks.d/kmsgfs.json into /usr/share/containers/oci/hooks.d/ for Podman \
        and CRI-O, or add it to config.json's hooks.createContainer for runc."
    )]
    OciHook(kmsgfs::cli::oci_hook::OciHookArgs),
    /// Keep the fds a restarted daemon needs (FUSE connection, rings, seccomp listeners).
    #[command(long_about = "Keep the fds a restarted daemon needs.\n\n\
        A small process that holds copies of the FUSE connection, the shared rings and the \
        seccomp listeners that `kmsgfs serve --holder-socket PATH` hands it, and gives them to \
        the next daemon, so that a crash or an upgrade of the daemon breaks no container. It \
        reads nothing from containers. Run it as its own service (docs/deploy.md). Needs root.")]
    Holder(kmsgfs::restart::holder::HolderArgs),
    /// Write man pages for kmsgfs and each subcommand.
    Man(ManArgs),
}

/// Options of `kmsgfs man`.
#[derive(Debug, clap::Args)]
struct ManArgs {
    /// Directory to write kmsgfs.1 and kmsgfs-<subcommand>.1 into (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
}

/// Render kmsgfs.1 and one page per subcommand into `out`; the paths written.
fn write_man_pages(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let cmd = Cli::command();
    let mut written = Vec::new();
    let mut render = |c: clap::Command, file: String| -> std::io::Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf)?;
        let p = out.join(file);
        std::fs::write(&p, buf)?;
        written.push(p);
        Ok(())
    };
    for sub in cmd.get_subcommands() {
        let name = format!("kmsgfs-{}", sub.get_name());
        // clap names are `&'static str` without its `string` feature; a few bytes per page of
        // a one-shot command.
        let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
        render(sub.clone().name(static_name), format!("{name}.1"))?;
    }
    render(cmd, "kmsgfs.1".into())?;
    Ok(written)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Serve(args) => kmsgfs::cli::serve::serve(args).map_err(Into::into),
        Command::Run(args) => std::process::exit(kmsgfs::cli::run::main(&args)),
        Command::SeccompProfile { listener } => {
            print!(
                "{}",
                kmsgfs::frontends::seccomp::seccomp_profile_json(&listener)
            );
            Ok(())
        }
        Command::Demo(args) => kmsgfs::cli::demo::run(&args).map_err(Into::into),
        Command::Holder(args) => kmsgfs::restart::holder::main(&args).map_err(Into::into),
        Command::OciHook(args) => kmsgfs::cli::oci_hook::main(&args).map_err(Into::into),
        Command::Man(args) => write_man_pages(&args.out)
            .map(|pages| {
                for p in pages {
                    println!("{}", p.display());
                }
            })
            .map_err(|e| format!("writing man pages to {}: {e}", args.out.display()).into()),
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
