//! The `session-sidecar` command line (SPEC §2): run, check-config, hash-token, --version.

use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;
use pingora::server::RunArgs;
use session_sidecar::{build_server, config, LaunchOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

#[derive(Parser)]
#[command(
    name = "session-sidecar",
    version,
    about = "A session-aware reverse-proxy sidecar"
)]
struct Cli {
    /// Config file to run with.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Take over the listeners of a running instance (zero-downtime upgrade).
    #[arg(short, long)]
    upgrade: bool,
    /// Run in the background.
    #[arg(short, long)]
    daemon: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and validate a config file; print FILE:LINE:COL: message on error.
    CheckConfig { file: PathBuf },
    /// Read a secret on stdin and print its SHA-256 (hex) for token_sha256, app_token_sha256 or
    /// basic_password_sha256 (for Basic credentials hash the password alone, not user:password).
    HashToken,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::HashToken) => hash_token(),
        None => match cli.config {
            Some(file) => run(
                &file,
                LaunchOptions {
                    upgrade: cli.upgrade,
                    daemon: cli.daemon,
                    work_stealing: false,
                    clock: session_sidecar::session::Clock::system(),
                },
            ),
            None => {
                eprintln!("session-sidecar: --config FILE is required (see --help)");
                ExitCode::from(2)
            }
        },
    }
}

fn check_config(file: &Path) -> ExitCode {
    match config::load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn hash_token() -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("session-sidecar hash-token: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    // `echo secret |` and `echo -n secret |` give the same hash.
    if input.last() == Some(&b'\n') {
        input.pop();
        if input.last() == Some(&b'\r') {
            input.pop();
        }
    }
    println!(
        "{}",
        hex::encode(session_sidecar::auth::static_secrets::sha256(&input))
    );
    ExitCode::SUCCESS
}

/// pingora binds the listeners inside each service's task, retrying for 30 s while a port is
/// in use, and then panics in that task. The process would live on without listening, looking
/// healthy to a supervisor. A sidecar that cannot listen exits with status 1 instead.
fn exit_when_listeners_fail() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        // pingora 0.9's `expect` in `ListeningService::start_service`.
        if message.starts_with("Failed to build listeners") {
            log::error!("cannot listen, exiting: {message}");
            std::process::exit(1);
        }
    }));
}

fn run(file: &Path, launch: LaunchOptions) -> ExitCode {
    session_sidecar::logging::init();
    let config = match config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let sidecar = match build_server(config, &launch) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("session-sidecar: {e}");
            return ExitCode::FAILURE;
        }
    };
    exit_when_listeners_fail();
    let session_sidecar::Sidecar { mut server, state } = sidecar;
    server.bootstrap();
    log::info!("session-sidecar {} starting", env!("CARGO_PKG_VERSION"));
    server.run(RunArgs::default());
    state.shutdown_store();
    state.flush_access_log();
    log::info!("session-sidecar stopped");
    ExitCode::SUCCESS
}
