//! `impulse-sink`: the configurable SMTP sink. Parses the command line and
//! runs `impulse_perf::sink`.

use clap::Parser;

fn main() {
    let args = impulse_perf::sink::Args::parse();
    std::process::exit(impulse_perf::sink::main(args));
}
