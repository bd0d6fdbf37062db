//! Test harness: starts the real `impulse` binary on loopback with a
//! config written by the test, and stops it again.
#![allow(dead_code)]

pub mod recorder;
pub mod sink;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running server.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log: Arc<Mutex<String>>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_impulse")
}

/// Writes `config` (with `{port}` and `{dir}` substituted) and starts the server.
pub fn start(config: &str) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    start_in(dir, port, config)
}

pub fn start_in(dir: tempfile::TempDir, port: u16, config: &str) -> Server {
    let config_path = dir.path().join("impulse.toml");
    let text = config
        .replace("{port}", &port.to_string())
        .replace("{dir}", &dir.path().display().to_string());
    std::fs::write(&config_path, text).expect("write config");
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&config_path)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn impulse");
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let server = Server {
        child,
        port,
        dir,
        config_path,
        log,
    };
    server.wait_log("serving with", Duration::from_secs(20));
    server
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a log line containing `needle`; panics with the log on timeout.
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {needle:?} in the server log:\n{}", self.log_text());
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Sends SIGTERM and waits for the exit status (panics after `limit`).
    pub fn stop(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        wait_exit(&mut self.child, limit)
    }

    /// Shard `n`'s spool directory under the test's spoolbase.
    pub fn spool_dir(&self, n: usize) -> String {
        self.dir
            .path()
            .join("spool")
            .join(format!("shard-{n}"))
            .display()
            .to_string()
    }
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line-oriented SMTP test client.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Connects from a chosen loopback source address (e.g. 127.0.0.2).
    pub fn connect_from(src: [u8; 4], addr: SocketAddr) -> Client {
        use std::os::fd::FromRawFd;
        // SAFETY: a fresh socket fd, bound and connected with valid sockaddrs, then owned by TcpStream.
        let stream = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as u16;
            sa.sin_addr.s_addr = u32::from_ne_bytes(src);
            assert_eq!(
                libc::bind(
                    fd,
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32
                ),
                0
            );
            let SocketAddr::V4(v4) = addr else {
                panic!("v4 only")
            };
            sa.sin_port = v4.port().to_be();
            sa.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            assert_eq!(
                libc::connect(
                    fd,
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32
                ),
                0
            );
            TcpStream::from_raw_fd(fd)
        };
        Client::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    /// Reads one (possibly multi-line) reply; "" when the server closed.
    pub fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return out;
            }
            out.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return out;
            }
        }
    }

    pub fn send(&mut self, data: &str) {
        self.stream.write_all(data.as_bytes()).unwrap();
    }

    /// Sends a command line and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n"));
        self.reply()
    }

    /// True when the server closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

/// Runs `impulse` with arguments, returning (status, stdout, stderr).
pub fn run_impulse(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run impulse");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Counts from `impulse spool inspect` of one shard's spool (`u64::MAX`
/// for a count it did not print).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inspect {
    pub live: u64,
    pub never_attempted: u64,
    pub retrying: u64,
    pub pending: u64,
}

/// Runs `impulse spool inspect` on `dir` (safe beside a running server).
pub fn inspect(dir: &str) -> Inspect {
    let (_, out, _) = run_impulse(&["spool", "inspect", dir]);
    // The first number after `key`, wherever it is on its line.
    let num = |key: &str| {
        out.split_once(key)
            .map(|(_, rest)| rest.trim_start())
            .and_then(|rest| {
                let end = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                rest[..end].parse().ok()
            })
            .unwrap_or(u64::MAX)
    };
    Inspect {
        live: num("live messages: "),
        never_attempted: num("never attempted: "),
        retrying: num("retrying: "),
        pending: num("pending recipients: "),
    }
}

pub fn basic_config(extra_global: &str, extra_listener: &str) -> String {
    format!(
        "[global]\nshards = 1\nspoolbase = \"{{dir}}/spool\"\nlog_dir = \"{{dir}}/log\"\nhostname = \"mx.test\"\nshutdown_timeout = 2\nsuspend_delivery = true\n{extra_global}\n\
         [listener.esmtp]\nlisten = [\"127.0.0.1:{{port}}\"]\n{extra_listener}\n"
    )
}

pub fn has(path: &Path) -> bool {
    path.exists()
}

/// Polls `f` every 20 ms until it holds or `limit` passes; says which.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Sends `n` messages from `mail_from` to recipients in `domain` over
/// `clients` connections at once (so that SO_REUSEPORT spreads them over
/// the shards); every one must get its 250.
pub fn inject(addr: SocketAddr, n: usize, clients: usize, mail_from: &str, domain: &str) {
    let per = n.div_ceil(clients);
    let threads: Vec<_> = (0..clients)
        .map(|k| {
            let (from, domain) = (mail_from.to_string(), domain.to_string());
            let count = per.min(n.saturating_sub(k * per));
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                assert!(c.reply().starts_with("220"));
                assert!(c.cmd("EHLO t").starts_with("250"));
                for i in 0..count {
                    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
                    let r = c.cmd(&format!("RCPT TO:<u{k}x{i}@{domain}>"));
                    assert!(r.starts_with("250"), "{r}");
                    assert!(c.cmd("DATA").starts_with("354"));
                    c.send(&format!("Subject: {k}/{i}\r\n\r\nbody\r\n.\r\n"));
                    let r = c.reply();
                    assert!(r.starts_with("250"), "{r}");
                }
                c.cmd("QUIT");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client");
    }
}
