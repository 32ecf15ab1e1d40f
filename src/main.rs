//! The `kmsgfs` command.

fn main() {
    env_logger::init();
    log::info!("kmsgfs {}", env!("CARGO_PKG_VERSION"));
}
