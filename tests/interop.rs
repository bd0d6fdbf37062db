//! Real clients against the real binary: swaks and Python's smtplib,
//! plain, pipelined, STARTTLS (certificate made here with rcgen) and AUTH.

mod common;

use std::process::Command;

use common::*;

fn tls_config(dir: &std::path::Path) -> String {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let params = sha_crypt::Sha512Params::new(5000).unwrap();
    let hash = sha_crypt::sha512_simple("s3cret", &params).unwrap();
    std::fs::write(dir.join("passwd"), format!("alice:{hash}\n")).unwrap();
    basic_config(
        "",
        "tls_certificate = \"cert.pem\"\ntls_key = \"key.pem\"\nauth_password_file = \"passwd\"\n\
         [listener.esmtp.peer.\"127.0.0.2/32\"]\ncan_relay = false\n",
    )
}

fn swaks(args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args(args)
        .output()
        .expect("swaks is installed (.ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn swaks_plain_gets_250_after_the_durable_write() {
    let s = start(&basic_config("", ""));
    let server = format!("127.0.0.1:{}", s.port);
    let (ok, out) = swaks(&[
        "--server",
        &server,
        "--from",
        "a@example.org",
        "--to",
        "b@example.net",
        "--ehlo",
        "swaks.test",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("<-  250 2.0.0 Ok: queued as "), "{out}");
    let (ok, out) = swaks(&[
        "--server",
        &server,
        "--from",
        "a@example.org",
        "--to",
        "b@example.net,c@example.net",
        "--pipeline",
    ]);
    assert!(ok, "{out}");
}

#[test]
fn swaks_starttls_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tls_config(dir.path());
    let s = start_in(dir, free_port(), &cfg);
    let server = format!("127.0.0.1:{}", s.port);
    // Relay from a network that may not relay works after AUTH over TLS.
    let base = [
        "--server",
        server.as_str(),
        "--local-interface",
        "127.0.0.2",
        "--from",
        "a@example.org",
        "--to",
        "b@example.net",
    ];
    let (ok, out) = swaks(
        &[
            &base[..],
            &["-tls", "-a", "PLAIN", "-au", "alice", "-ap", "s3cret"],
        ]
        .concat(),
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("TLS started") || out.contains("STARTTLS"),
        "{out}"
    );
    assert!(out.contains("235 2.7.0"), "{out}");
    assert!(out.contains("queued as"), "{out}");
    let (ok, out) = swaks(
        &[
            &base[..],
            &["-tls", "-a", "LOGIN", "-au", "alice", "-ap", "wrong"],
        ]
        .concat(),
    );
    assert!(!ok);
    assert!(out.contains("535 5.7.8"), "{out}");
    // Without TLS, AUTH is not offered and relaying is refused.
    let (ok, out) = swaks(&base);
    assert!(!ok);
    assert!(out.contains("550 5.7.1"), "{out}");
    assert!(!out.contains("AUTH PLAIN"), "{out}");
}

const SMTPLIB_SCRIPT: &str = r#"
import smtplib, ssl, sys
port = int(sys.argv[1]); mode = sys.argv[2]
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
s.ehlo("py.test")
assert s.has_extn("pipelining") and s.has_extn("size") and s.has_extn("8bitmime") and s.has_extn("chunking")
if mode == "tls":
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    s.starttls(context=ctx); s.ehlo("py.test")
    assert s.has_extn("auth"), s.esmtp_features
    code, text = s.docmd("STARTTLS")
    assert code == 503 and text.startswith(b"5.5.1"), (code, text)
    s.login("alice", "s3cret")
for i in range(5):
    msg = "Subject: n%d\r\n\r\nline\r\n.leading dot\r\n" % i
    refused = s.sendmail("a@example.org", ["b@example.net", "c@example.net"], msg)
    assert refused == {}, refused
code, text = s.docmd("NOOP")
assert code == 250
# 8-bit body with BODY=8BITMIME
s.sendmail("a@example.org", ["b@example.net"], "Subject: x\r\n\r\ncaf\xe9\r\n".encode("latin-1"), mail_options=["BODY=8BITMIME"])
s.quit()
print("OK")
"#;

fn smtplib(port: u16, mode: &str) {
    let out = Command::new("python3")
        .args(["-c", SMTPLIB_SCRIPT, &port.to_string(), mode])
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("OK"), "{text}");
}

#[test]
fn python_smtplib_plain() {
    let s = start(&basic_config("", ""));
    smtplib(s.port, "plain");
}

#[test]
fn python_smtplib_starttls_and_login() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tls_config(dir.path());
    let s = start_in(dir, free_port(), &cfg);
    smtplib(s.port, "tls");
}

/// A password file for alice and a listener that offers AUTH without TLS
/// (so the plain test client can time the replies), with `extra` options.
fn auth_config(dir: &std::path::Path, extra: &str) -> String {
    let params = sha_crypt::Sha512Params::new(5000).unwrap();
    let hash = sha_crypt::sha512_simple("s3cret", &params).unwrap();
    std::fs::write(dir.join("passwd"), format!("alice:{hash}\n")).unwrap();
    basic_config(
        "",
        &format!("auth_password_file = \"passwd\"\nauth_requires_tls = false\n{extra}"),
    )
}

fn plain(authzid: &str, user: &str, password: &str) -> String {
    use base64::Engine as _;
    let raw = format!("{authzid}\0{user}\0{password}");
    format!(
        "AUTH PLAIN {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn greeted_from(src: [u8; 4], s: &Server) -> Client {
    let mut c = Client::connect_from(src, s.addr());
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.test").contains("AUTH PLAIN LOGIN"));
    c
}

/// Each failed AUTH in a session waits before its 535, longer each time,
/// so guessing passwords in one session is slow. (Lower bounds on a wait
/// the server imposes; nothing here asserts that anything is fast.)
#[test]
fn failed_auth_is_answered_after_a_growing_delay() {
    // The default auth_failure_delay_ms.
    const DELAY_MS: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let cfg = auth_config(dir.path(), "");
    let s = start_in(dir, free_port(), &cfg);
    let mut c = greeted_from([127, 0, 0, 1], &s);
    let mut waited = Vec::new();
    for _ in 0..2 {
        let t = std::time::Instant::now();
        let r = c.cmd(&plain("", "alice", "wrong"));
        assert!(r.starts_with("535 5.7.8"), "{r}");
        waited.push(t.elapsed());
    }
    let base = std::time::Duration::from_millis(DELAY_MS);
    assert!(waited[0] >= base, "first failure after {:?}", waited[0]);
    assert!(
        waited[1] >= base * 2,
        "second failure after {:?}",
        waited[1]
    );
    let r = c.cmd(&plain("", "alice", "s3cret"));
    assert!(
        r.starts_with("235 2.7.0"),
        "the right password still works: {r}"
    );
}

/// Failed AUTHs from 127.0.0.1 allowed before 421 in the budget tests.
const BUDGET: usize = 3;

/// A server with `shards` shards and an AUTH budget of `BUDGET` failures
/// (no delay), which 127.0.0.1 has used up in `BUDGET` sessions.
fn budget_used_up(shards: usize) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cfg = auth_config(
        dir.path(),
        &format!(
            "auth_failure_delay_ms = 0\nauth_failures_per_ip = {BUDGET}\nauth_failure_window_secs = 600\n"
        ),
    )
    .replace("shards = 1", &format!("shards = {shards}"));
    let s = start_in(dir, free_port(), &cfg);
    for _ in 0..BUDGET {
        let mut c = greeted_from([127, 0, 0, 1], &s);
        let r = c.cmd(&plain("", "alice", "wrong"));
        assert!(r.starts_with("535 5.7.8"), "{r}");
        assert!(c.cmd("QUIT").starts_with("221"));
    }
    s
}

/// Failures from one address add up across sessions: past
/// `auth_failures_per_ip` AUTH is refused with 421 4.7.0 and the session
/// closed, even with the right password; other addresses are unaffected.
#[test]
fn failed_auth_budget_per_address_spans_sessions() {
    let s = budget_used_up(1);
    for password in ["wrong", "s3cret"] {
        let mut c = greeted_from([127, 0, 0, 1], &s);
        let r = c.cmd(&plain("", "alice", password));
        assert!(r.starts_with("421 4.7.0"), "over budget: {r}");
        assert!(c.closed(), "the session ends after the 421");
    }
    s.wait_log(
        "AUTH refused for 127.0.0.1",
        std::time::Duration::from_secs(10),
    );
    let mut other = greeted_from([127, 0, 0, 2], &s);
    let r = other.cmd(&plain("", "alice", "s3cret"));
    assert!(r.starts_with("235 2.7.0"), "another address: {r}");
}

/// With two shards, SO_REUSEPORT spreads one client's sessions over both;
/// the address's owner shard counts for both, so the budget holds for the
/// host, not once per shard.
#[test]
fn failed_auth_budget_holds_across_shards() {
    let s = budget_used_up(2);
    // Both shards take some of these (each new connection lands on either).
    for _ in 0..8 {
        let mut c = greeted_from([127, 0, 0, 1], &s);
        let r = c.cmd(&plain("", "alice", "s3cret"));
        assert!(r.starts_with("421 4.7.0"), "over the host-wide budget: {r}");
    }
    let mut other = greeted_from([127, 0, 0, 2], &s);
    let r = other.cmd(&plain("", "alice", "s3cret"));
    assert!(r.starts_with("235 2.7.0"), "another address: {r}");
}

/// RFC 4616 §2: an authorization identity other than the user's own is
/// refused even with the right password.
#[test]
fn auth_plain_with_a_foreign_authzid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = auth_config(dir.path(), "");
    let s = start_in(dir, free_port(), &cfg);
    let mut c = greeted_from([127, 0, 0, 1], &s);
    let r = c.cmd(&plain("postmaster", "alice", "s3cret"));
    assert!(r.starts_with("535 5.7.8"), "{r}");
    let r = c.cmd(&plain("alice", "alice", "s3cret"));
    assert!(r.starts_with("235 2.7.0"), "acting as yourself: {r}");
}

const SMTPLIB_WRONG_LOGINS: &str = r#"
import smtplib, ssl, sys, time
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60)
s.ehlo("py.test")
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx); s.ehlo("py.test")
for i in range(2):
    t = time.monotonic()
    s.user, s.password = "alice", "wrong"
    try:
        s.auth("PLAIN", s.auth_plain)  # login() would also retry with LOGIN
        raise SystemExit("wrong password accepted")
    except smtplib.SMTPAuthenticationError as e:
        assert e.smtp_code == 535, e
    print("waited_ms", int((time.monotonic() - t) * 1000))
s.login("alice", "s3cret")
s.quit()
print("OK")
"#;

/// The same growing delay seen by Python's smtplib over STARTTLS.
#[test]
fn python_smtplib_wrong_logins_over_starttls_are_slowed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tls_config(dir.path());
    let s = start_in(dir, free_port(), &cfg);
    let out = Command::new("python3")
        .args(["-c", SMTPLIB_WRONG_LOGINS, &s.port.to_string()])
        .output()
        .expect("python3");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("OK"), "{text}");
    let waited: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("waited_ms "))
        .filter_map(|n| n.parse().ok())
        .collect();
    // The default auth_failure_delay_ms, then doubled.
    assert_eq!(waited.len(), 2, "{text}");
    assert!(waited[0] >= 1000 && waited[1] >= 2000, "{text}");
}
