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
