//! Stand-alone front end for the offline spool tools until `impulse spool`
//! is wired: `spool_tool verify --dir D`, `inspect --dir D`, `show --dir D ID`.

use clap::Parser;
use impulse::spool::tools::{run, SpoolCommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: SpoolCommand,
}

fn main() -> std::process::ExitCode {
    run(Cli::parse().cmd)
}
