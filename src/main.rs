//! The `impulse` command: parses the CLI, sets the SIGPIPE disposition and
//! dispatches. May call: `server`, `config`, `spool::tools`,
//! `runtime::logger`. Must never: start a server other than through
//! `server::serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use impulse::config::{report, Config};

/// impulse: a thread-per-core mail transfer agent for bulk-sending hosts.
#[derive(Parser)]
#[command(name = "impulse", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SIGTERM/SIGINT: graceful shutdown; SIGHUP: reload the config).
    Serve {
        /// Configuration file (TOML); without it the embedded default runs.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration and print the effective settings per scope.
    CheckConfig {
        /// Configuration file; without it the embedded default is checked.
        file: Option<PathBuf>,
        /// List every option with its scopes, default and meaning instead.
        #[arg(long)]
        options: bool,
    },
    /// Offline spool tools (read-only: never change the spool, safe beside a running server).
    Spool {
        #[command(subcommand)]
        command: impulse::spool::tools::SpoolCommand,
    },
    /// Print the version.
    Version,
}

/// The offline commands (and `--help`) print to stdout, often into
/// `| head`. Rust's runtime ignores SIGPIPE, which turns a closed pipe into
/// EPIPE and `println!` into a panic; with the default action the process
/// ends quietly, as `cat` or `ls` do. `serve` ignores SIGPIPE again: a
/// peer or a log reader going away must be an error on that descriptor,
/// never the end of the server.
fn set_sigpipe(action: libc::sighandler_t) {
    // SAFETY: called on the main thread before any other thread exists;
    // SIG_DFL and SIG_IGN are valid dispositions for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, action);
    }
}

fn main() -> ExitCode {
    set_sigpipe(libc::SIG_DFL);
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve { .. }) {
        set_sigpipe(libc::SIG_IGN);
    }
    match cli.command {
        Command::Serve { config } => {
            impulse::runtime::logger::init();
            let result = impulse::server::serve(config);
            impulse::runtime::logger::drain();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("impulse: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::CheckConfig { file, options } => {
            if options {
                print!("{}", report::options_help());
                return ExitCode::SUCCESS;
            }
            match Config::load(file.as_deref()) {
                Ok(c) => {
                    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                    print!("{}", c.effective_report(cpus));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("impulse: configuration is invalid ({} error(s))", e.0.len());
                    ExitCode::from(2)
                }
            }
        }
        Command::Spool { command } => impulse::spool::tools::run(command),
        Command::Version => {
            println!("impulse {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
