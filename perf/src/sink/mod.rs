//! The sink: a thread-per-core SMTP server that accepts mail and counts it
//! (optionally storing it), on many addresses at once, behaving per
//! address and per recipient domain as a TOML file says (`behaviour`).
//! Stops on SIGTERM/SIGINT, after `--duration` or after `--expect N`
//! messages, and prints its summary.
//!
//! May call: `impulse::smtp::server`, glommio, rustls. The protocol is
//! impulse's engine; this module only drives it and keeps score.

pub mod behaviour;
pub mod session;
pub mod stats;

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use glommio::net::TcpListener;

use behaviour::Behaviour;
use stats::{AddrStat, Global, Local, Report};

/// How often executors and the main thread look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// After `--expect` is met: time for the last replies to go out.
const EXPECT_GRACE: Duration = Duration::from_millis(200);

/// impulse-sink: accepts SMTP mail, counts it, measures its latency.
#[derive(Parser, Debug, Clone)]
#[command(name = "impulse-sink", version, about)]
pub struct Args {
    /// Listen on IP:PORT; repeat or separate by commas. A range of IPv4
    /// addresses takes one port: `127.0.0.2-127.0.0.60:25`.
    #[arg(short = 'l', long = "listen", value_delimiter = ',', required = true)]
    pub listen: Vec<String>,
    /// Receiver behaviour file (TOML; see `behaviour`).
    #[arg(short = 'b', long)]
    pub behaviour: Option<PathBuf>,
    /// Store each accepted message as DIR/<id>.eml.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(short = 'd', long)]
    pub duration: Option<f64>,
    /// Stop once this many messages were accepted.
    #[arg(short = 'e', long)]
    pub expect: Option<u64>,
    /// Stop once this many recipients were accepted (an MTA may split a
    /// message into one transaction per destination domain).
    #[arg(long)]
    pub expect_recipients: Option<u64>,
    /// Executors (one pinned per core); 0 = one per allowed CPU.
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// Expands the `--listen` values.
pub fn listen_addrs(specs: &[String]) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for spec in specs {
        if let Ok(a) = spec.parse::<SocketAddr>() {
            out.push(a);
            continue;
        }
        let bad = || format!("{spec:?}: expected IP:PORT or FIRST-LAST:PORT (IPv4)");
        let (range, port) = spec.rsplit_once(':').ok_or_else(bad)?;
        let (a, b) = range.split_once('-').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let (a, b): (Ipv4Addr, Ipv4Addr) =
            (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        let (a, b) = (u32::from(a), u32::from(b));
        if a > b || b - a > MAX_RANGE_ADDRS {
            return Err(format!(
                "{spec:?}: empty range or more than {MAX_RANGE_ADDRS} addresses"
            ));
        }
        out.extend((a..=b).map(|ip| SocketAddr::new(IpAddr::V4(ip.into()), port)));
    }
    Ok(out)
}

/// Largest address range one `--listen` value may name.
const MAX_RANGE_ADDRS: u32 = 65_536;

/// One executor's state.
pub struct Shard {
    id: usize,
    global: Arc<Global>,
    behaviour: Arc<Behaviour>,
    tls: Option<Arc<rustls::ServerConfig>>,
    store: Option<PathBuf>,
    local: RefCell<Local>,
    rng: RefCell<fastrand::Rng>,
}

/// Runs the sink; returns the exit code.
pub fn main(args: Args) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("impulse-sink: {e}");
            2
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let addrs = listen_addrs(&args.listen)?;
    let behaviour = match &args.behaviour {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Behaviour::parse(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => Behaviour::default(),
    };
    if let Some(dir) = &args.store {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tls = Some(crate::net::self_signed_server()?);
    crate::shards::raise_limits();
    let global = Arc::new(Global {
        addrs: addrs.iter().map(|a| AddrStat::new(*a)).collect(),
        ..Global::default()
    });
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, signalled.clone()).map_err(|e| e.to_string())?;
    }
    let shards = crate::shards::default_count(args.shards);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let runner = {
        let (g, b, store) = (global.clone(), Arc::new(behaviour), args.store.clone());
        std::thread::spawn(move || {
            crate::shards::run("sink", shards, move |id| {
                let shard = Rc::new(Shard {
                    id,
                    global: g.clone(),
                    behaviour: b.clone(),
                    tls: tls.clone(),
                    store: store.clone(),
                    local: RefCell::new(Local::default()),
                    rng: RefCell::new(fastrand::Rng::with_seed(0x51AC_0000 + id as u64)),
                });
                executor(shard, addrs.clone(), ready_tx.clone())
            })
        })
    };
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                global.stop.store(true, Relaxed);
                let _ = runner.join();
                return Err(e);
            }
            Err(_) => break,
        }
    }
    eprintln!(
        "impulse-sink: listening on {} address(es) with {shards} executor(s)",
        global.addrs.len()
    );
    let start = Instant::now();
    let deadline = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let mut last = (Instant::now(), 0u64);
    loop {
        std::thread::sleep(STOP_POLL);
        let got = global.messages.load(Relaxed);
        if signalled.load(Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let rcpts = global.recipients.load(Relaxed);
        if args.expect.is_some_and(|n| got >= n)
            || args.expect_recipients.is_some_and(|n| rcpts >= n)
        {
            std::thread::sleep(EXPECT_GRACE);
            break;
        }
        if !args.quiet && last.0.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "[{:7.1}s] messages {} rate {:.0}/s recipients {} refused {} connections {} open {}",
                start.elapsed().as_secs_f64(),
                got,
                (got - last.1) as f64 / last.0.elapsed().as_secs_f64(),
                global.recipients.load(Relaxed),
                global.refused.load(Relaxed),
                global.connections.load(Relaxed),
                global.current.load(Relaxed)
            );
            last = (Instant::now(), got);
        }
    }
    global.stop.store(true, Relaxed);
    let locals = runner
        .join()
        .map_err(|_| "an executor panicked".to_string())??;
    let mut all = Local::default();
    for l in &locals {
        all.merge(l);
    }
    let report = Report::build(&global, &all, start.elapsed().as_secs_f64());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Binds every address (SO_REUSEPORT: each executor has its own socket),
/// accepts until told to stop, and hands back its tables.
async fn executor(
    shard: Rc<Shard>,
    addrs: Vec<SocketAddr>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) -> Local {
    let mut tasks = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        match TcpListener::bind(*addr) {
            Ok(sock) => {
                tasks.push(glommio::spawn_local(accept(shard.clone(), sock, i)).detach());
            }
            Err(e) => {
                let _ = ready.send(Err(format!("cannot listen on {addr}: {e}")));
                return Local::default();
            }
        }
    }
    let _ = ready.send(Ok(()));
    while !shard.global.stop.load(Relaxed) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    for t in tasks {
        t.cancel();
    }
    let local = std::mem::take(&mut *shard.local.borrow_mut());
    local
}

async fn accept(shard: Rc<Shard>, sock: TcpListener, addr_idx: usize) {
    loop {
        match sock.accept().await {
            Ok(stream) => {
                glommio::spawn_local(session::run(shard.clone(), stream, addr_idx)).detach();
            }
            Err(_) => glommio::timer::sleep(Duration::from_millis(50)).await,
        }
    }
}
