//! `impulse-load`: the load generator. Parses the command line and runs
//! `impulse_perf::load`.

use clap::Parser;

fn main() {
    let args = impulse_perf::load::args::Args::parse();
    std::process::exit(impulse_perf::load::main(args));
}
