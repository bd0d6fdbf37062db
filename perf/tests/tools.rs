//! Correctness of impulse-load and impulse-sink against each other on
//! loopback: counts agree, injected failures are honoured and reported,
//! failures reach the exit code, histograms are present. Never speed.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Sink {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sink {
    /// Starts a sink on a free loopback port with a behaviour file.
    fn start(behaviour: &str, extra: &[&str]) -> Sink {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("behaviour.toml");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(behaviour.as_bytes()))
            .expect("write behaviour");
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_impulse-sink"))
            .args([
                "-l",
                &format!("127.0.0.1:{port}"),
                "--json",
                "-q",
                "--shards",
                "2",
            ])
            .arg("-b")
            .arg(&path)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sink");
        // Ready once every executor has bound: it says so on stderr.
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        let _ = stderr.read_line(&mut line);
        assert!(line.contains("listening on"), "sink did not start: {line}");
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Sink {
            child: Some(child),
            port,
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        SocketAddr::from(([127, 0, 0, 1], self.port)).to_string()
    }

    /// SIGTERM, then the JSON report it printed.
    fn stop(mut self) -> Value {
        let child = self.child.take().expect("running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        report(child.wait_with_output().expect("sink exit"))
    }

    /// Waits for the sink to stop by itself (--expect / --duration).
    fn wait(mut self) -> Value {
        report(
            self.child
                .take()
                .expect("running")
                .wait_with_output()
                .expect("sink exit"),
        )
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn report(out: Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}: {text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Runs the load generator; returns its exit code and JSON report.
fn load(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_impulse-load"))
        .args(["--json", "-q", "--shards", "2", "--timeout", "20"])
        .args(args)
        .output()
        .expect("run load");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v)
}

fn n(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

#[test]
fn counts_agree_and_histograms_are_present() {
    // --duration: a bound, should the count never be reached.
    let sink = Sink::start("", &["--expect", "600", "--duration", "60"]);
    let (code, l) = load(&[
        "-t",
        &sink.addr(),
        "-m",
        "600",
        "-c",
        "7",
        "-r",
        "3",
        "--domains",
        "4",
        "--domain-dist",
        "zipf",
        "-s",
        "2k-6k",
        "--per-connection",
        "50",
    ]);
    let s = sink.wait();
    assert_eq!(code, 0, "{l}");
    assert_eq!(n(&l, "/messages/sent"), 600);
    assert_eq!(n(&l, "/messages/accepted"), 600);
    assert_eq!(n(&l, "/recipients/accepted"), 1800);
    assert_eq!(n(&l, "/latency/count"), 600);
    assert!(n(&l, "/latency/p99_us") > 0);
    // 600 messages at 50 per connection: 12 connections at least.
    assert!(n(&l, "/connections") >= 12, "{l}");
    assert_eq!(n(&s, "/total/messages"), 600);
    assert_eq!(n(&s, "/total/recipients"), 1800);
    assert_eq!(
        n(&s, "/total/latency/count"),
        600,
        "every message is stamped"
    );
    assert_eq!(n(&s, "/unstamped"), 0);
    let domains = s["domains"].as_object().expect("domains");
    let rcpts: u64 = domains.values().map(|d| n(d, "/recipients")).sum();
    assert_eq!(rcpts, 1800);
    assert!(n(&s, "/domains/d1.example/recipients") > n(&s, "/domains/d4.example/recipients"));
    assert_eq!(n(&s, "/sources/127.0.0.1/messages"), 600);
}

#[test]
fn injected_failures_are_honoured_counted_and_fail_the_exit_code() {
    let sink = Sink::start(
        r#"
        [domain."d1.example"]
        rcpt_5xx = 1.0
        [domain."d2.example"]
        data_4xx = 1.0
        data_delay_ms = 5
        "#,
        &[],
    );
    let args = ["-t", &sink.addr(), "-m", "300", "-c", "5", "--domains", "3"];
    let (code, l) = load(&args);
    // Three messages all refused (every recipient in d1), failures allowed.
    let (code_allowed, l2) = load(&[
        "-t",
        &sink.addr(),
        "-m",
        "3",
        "--domain-pattern",
        "d1.example",
        "--allow-failures",
    ]);
    let s = sink.stop();
    assert_eq!(code, 1, "failures must fail the run: {l}");
    assert_eq!(code_allowed, 0, "{l2}");
    assert_eq!(n(&l2, "/messages/permanent_5xx"), 3);
    let (acc, t, p) = (
        n(&l, "/messages/accepted"),
        n(&l, "/messages/transient_4xx"),
        n(&l, "/messages/permanent_5xx"),
    );
    assert_eq!(acc + t + p, 300, "{l}");
    assert_eq!(n(&l, "/messages/errors"), 0);
    assert!(acc > 0 && t > 0 && p > 0, "{l}");
    // The load's view and the sink's view agree (+3 from the second run).
    assert_eq!(n(&s, "/domains/d1.example/rcpt_5xx"), p + 3);
    assert_eq!(n(&s, "/domains/d2.example/data_4xx"), t);
    assert_eq!(n(&s, "/total/messages"), acc);
    assert!(l["refusals"].to_string().contains("injected"), "{l}");
}

#[test]
fn connection_failures_are_counted_and_end_the_run() {
    let port = free_port(); // nothing listens here
    let (code, l) = load(&["-t", &format!("127.0.0.1:{port}"), "-m", "20", "-c", "2"]);
    assert_eq!(code, 1);
    assert_eq!(n(&l, "/messages/accepted"), 0);
    assert_eq!(n(&l, "/messages/errors"), 20);
    assert!(l["failures"].to_string().contains("connect"), "{l}");
}

#[test]
fn starttls_greylisting_and_connection_limits() {
    let sink = Sink::start(
        r#"
        [default]
        greylist = true
        max_connections = 2
        # Slow replies keep the run long enough for every connection to overlap.
        data_delay_ms = 2
        "#,
        &[],
    );
    let (code, l) = load(&[
        "-t",
        &sink.addr(),
        "-m",
        "1000",
        "-c",
        "6",
        "--users",
        "1",
        "--starttls",
        "required",
        "--allow-failures",
    ]);
    let s = sink.stop();
    assert_eq!(code, 0);
    // One recipient address in all: only its first attempt is greylisted.
    assert_eq!(n(&l, "/messages/transient_4xx"), 1, "{l}");
    assert!(
        n(&l, "/messages/errors") > 0,
        "refused connections are counted: {l}"
    );
    assert_eq!(
        n(&l, "/messages/accepted") + n(&l, "/messages/transient_4xx") + n(&l, "/messages/errors"),
        1000
    );
    let addr = format!("/addresses/{}", sink_addr_key(&s));
    assert!(n(&s, &format!("{addr}/peak_concurrent")) <= 2, "{s}");
    assert!(n(&s, &format!("{addr}/refused_connections")) > 0, "{s}");
    assert_eq!(n(&s, "/total/messages"), n(&l, "/messages/accepted"));
}

fn sink_addr_key(s: &Value) -> String {
    s["addresses"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .expect("one address")
        .replace('/', "~1")
}
