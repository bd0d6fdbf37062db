//! Resource limits: over-long command lines and BDAT sizes answered at
//! once, request and session deadlines (time passed in), and the shard's
//! budget for content held in memory.

use std::time::{Duration, Instant};

use super::*;
use crate::smtp::budget::ContentBudget;
use crate::smtp::server::TimeLimits;

const MAIL_RCPT: &str = "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\n";
const MAIL_RCPT_OK: &str = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n";
const GO_AHEAD: &str = "354 End data with <CR><LF>.<CR><LF>\r\n";
const NO_MEMORY: &str = "452 4.3.1 Insufficient system resources\r\n";

fn secs(n: f64) -> Duration {
    Duration::from_secs_f64(n)
}

#[test]
fn a_megabyte_line_without_newline_is_answered_at_once() {
    let mut s = greeted();
    let line = vec![b'X'; 1 << 20];
    let (out, step) = exchange_bytes(&mut s, &line);
    assert_eq!(out, "500 5.5.2 line too long\r\n");
    assert_eq!(step, Step::NeedInput);
    assert_eq!(s.buffered_input(), 0, "the line is not kept");
    // More of the same line: silently dropped, up to its CRLF.
    expect(&mut s, "XXXX", "");
    expect(&mut s, "XX\r\nNOOP\r\n", "250 2.0.0 Ok\r\n");
}

#[test]
fn bdat_size_beyond_64_bits_is_a_syntax_error_not_a_chunk() {
    let mut s = greeted();
    expect(&mut s, MAIL_RCPT, MAIL_RCPT_OK);
    for bad in [
        "BDAT 18446744073709551616",
        "BDAT 99999999999999999999999 LAST",
        "BDAT +5",
    ] {
        let (out, step) = exchange(&mut s, &format!("{bad}\r\nNOOP\r\n"));
        assert_eq!(
            out, "501 5.5.4 syntax: BDAT size [LAST]\r\n250 2.0.0 Ok\r\n",
            "{bad}"
        );
        assert_eq!(step, Step::NeedInput);
        assert!(!s.in_data(), "{bad}");
    }
    // The largest 64-bit size still parses as a chunk.
    expect(&mut s, "BDAT 18446744073709551615\r\n", "");
    assert!(s.in_data());
}

fn limits() -> TimeLimits {
    TimeLimits {
        command: secs(3.0),
        data: secs(5.0),
        min_data_rate_octets_per_sec: 500,
        max_session: Duration::ZERO,
    }
}

#[test]
fn command_deadline_is_not_pushed_back_by_each_byte() {
    let t0 = Instant::now();
    let mut s = greeted();
    s.start_timers(limits(), t0);
    assert_eq!(s.deadline(t0), Some(t0 + secs(3.0)));
    for (i, b) in "NOOP".bytes().enumerate() {
        let now = t0 + secs(0.5 * (i + 1) as f64);
        s.feed(&[b]);
        assert_eq!(s.process(), Step::NeedInput);
        assert_eq!(s.deadline(now), Some(t0 + secs(3.0)), "byte {i}");
        assert!(!s.expire(now));
    }
    assert!(s.expire(t0 + secs(3.0)));
    assert_eq!(
        text(s.take_output()),
        "421 4.4.2 mx.example timeout, closing\r\n"
    );
    assert_eq!(s.process(), Step::Close);
    assert_eq!(s.deadline(t0 + secs(3.0)), None);
}

#[test]
fn a_complete_command_starts_the_next_deadline_when_the_driver_waits() {
    let t0 = Instant::now();
    let mut s = greeted();
    s.start_timers(limits(), t0);
    assert_eq!(s.deadline(t0), Some(t0 + secs(3.0)));
    expect(&mut s, "NOOP\r\nNO", "250 2.0.0 Ok\r\n");
    let t1 = t0 + secs(2.0);
    assert_eq!(s.deadline(t1), Some(t1 + secs(3.0)));
    assert!(!s.expire(t0 + secs(4.0)));
    assert!(s.expire(t1 + secs(3.0)));
}

#[test]
fn content_deadline_grows_only_with_the_minimum_rate() {
    let t0 = Instant::now();
    let mut s = greeted();
    s.start_timers(limits(), t0);
    expect(
        &mut s,
        &format!("{MAIL_RCPT}DATA\r\n"),
        &(MAIL_RCPT_OK.to_string() + GO_AHEAD),
    );
    assert_eq!(s.deadline(t0), Some(t0 + secs(5.0)));
    // 500 octets at 500 octets/s earn one second.
    let lines = format!("{}\r\n", "a".repeat(48)).repeat(10);
    expect(&mut s, &lines, "");
    assert_eq!(s.deadline(t0 + secs(1.0)), Some(t0 + secs(6.0)));
    assert!(!s.expire(t0 + secs(5.5)));
    assert!(s.expire(t0 + secs(6.0)));
    assert_eq!(
        text(s.take_output()),
        "421 4.4.2 mx.example timeout, closing\r\n"
    );
}

#[test]
fn content_that_stops_is_cut_data_timeout_after_its_last_octet() {
    let t0 = Instant::now();
    let mut s = greeted();
    let rate = TimeLimits {
        min_data_rate_octets_per_sec: 10,
        ..limits()
    };
    s.start_timers(rate, t0);
    expect(
        &mut s,
        &format!("{MAIL_RCPT}DATA\r\n"),
        &(MAIL_RCPT_OK.to_string() + GO_AHEAD),
    );
    assert_eq!(s.deadline(t0), Some(t0 + secs(5.0)));
    // 500 octets at 10/s would earn 50 s; after one second they stop.
    let t1 = t0 + secs(1.0);
    let lines = format!("{}\r\n", "a".repeat(48)).repeat(10);
    expect(&mut s, &lines, "");
    assert_eq!(s.deadline(t1), Some(t1 + secs(5.0)));
    assert!(!s.expire(t1 + secs(4.9)));
    assert!(s.expire(t1 + secs(5.0)));
    assert_eq!(
        text(s.take_output()),
        "421 4.4.2 mx.example timeout, closing\r\n"
    );
}

#[test]
fn message_store_and_bdat_chunks_start_new_requests() {
    let t0 = Instant::now();
    let mut s = greeted();
    s.start_timers(limits(), t0);
    expect(&mut s, MAIL_RCPT, MAIL_RCPT_OK);
    expect(&mut s, "BDAT 4\r\nab", "");
    // Two octets at 500/s earn 4 ms, but a wait for more is data_timeout.
    assert_eq!(s.deadline(t0), Some(t0 + secs(5.0)));
    expect(&mut s, "cd", "250 2.0.0 4 octets received\r\n");
    let t1 = t0 + secs(4.0);
    assert_eq!(
        s.deadline(t1),
        Some(t1 + secs(3.0)),
        "a command deadline again"
    );
    let (_, step) = exchange(&mut s, "BDAT 1 LAST\r\ne");
    assert!(matches!(step, Step::Message(_)));
    s.message_stored(Ok("I".into()));
    assert_eq!(text(s.take_output()), "250 2.0.0 Ok: queued as I\r\n");
    let t2 = t0 + secs(9.0);
    assert_eq!(s.deadline(t2), Some(t2 + secs(3.0)));
}

#[test]
fn session_cap_closes_with_421_whatever_the_client_does() {
    let t0 = Instant::now();
    let mut s = greeted();
    s.start_timers(
        TimeLimits {
            max_session: secs(10.0),
            ..limits()
        },
        t0,
    );
    for i in 0..9 {
        let now = t0 + secs(i as f64);
        assert!(!s.expire(now));
        expect(&mut s, "NOOP\r\n", "250 2.0.0 Ok\r\n");
        let cap = (t0 + secs(10.0)).min(now + secs(3.0));
        assert_eq!(s.deadline(now), Some(cap));
    }
    assert!(s.expire(t0 + secs(10.0)));
    assert_eq!(
        text(s.take_output()),
        "421 4.4.2 mx.example session time limit reached, closing\r\n"
    );
    assert_eq!(s.process(), Step::Close);
}

fn budgeted(budget: &ContentBudget) -> ServerSession {
    let mut st = settings();
    st.max_data_line_octets = 1000;
    st.max_errors_per_session = 100;
    let mut s = session_with(st);
    s.set_content_budget(budget.clone());
    expect(&mut s, "EHLO c\r\n", EHLO_PLAIN);
    s
}

fn start_data(s: &mut ServerSession) {
    let want = MAIL_RCPT_OK.to_string() + GO_AHEAD;
    expect(s, &format!("{MAIL_RCPT}DATA\r\n"), &want);
}

fn content(octets: usize) -> String {
    format!("{}\r\n", "c".repeat(octets - 2))
}

#[test]
fn a_message_that_does_not_fit_the_budget_is_read_to_its_end_and_refused() {
    let budget = ContentBudget::new(1500);
    let (mut a, mut b) = (budgeted(&budget), budgeted(&budget));
    start_data(&mut a);
    expect(&mut a, &content(900), "");
    assert!(budget.used_octets() >= 900);
    start_data(&mut b);
    expect(&mut b, &content(400), "");
    // b's next 400 octets do not fit: it drops what it held and reads on.
    expect(&mut b, &content(400), "");
    assert!(budget.used_octets() < 1500 && b.in_data());
    let (out, step) = exchange(&mut b, "more\r\n.\r\nNOOP\r\n");
    assert_eq!(out, NO_MEMORY.to_string() + "250 2.0.0 Ok\r\n");
    assert_eq!(step, Step::NeedInput);
    // Until memory is back, new transactions are refused.
    expect(&mut b, "MAIL FROM:<a@b.example>\r\n", NO_MEMORY);
    // a finishes; its octets stay charged until they are stored.
    let (_, step) = exchange(&mut a, ".\r\n");
    assert!(matches!(step, Step::Message(_)));
    assert!(budget.used_octets() >= 900);
    a.message_stored(Ok("I".into()));
    assert_eq!(budget.used_octets(), 0);
    expect(&mut b, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
}

#[test]
fn budget_refusals_do_not_count_as_client_errors() {
    let budget = ContentBudget::new(100);
    let mut st = settings();
    st.max_errors_per_session = 1;
    let mut s = session_with(st);
    s.set_content_budget(budget.clone());
    expect(&mut s, "EHLO c\r\n", EHLO_PLAIN);
    let mut hog = budget.charge();
    assert!(hog.try_grow_to(100));
    for _ in 0..3 {
        expect(&mut s, "MAIL FROM:<a@b.example>\r\n", NO_MEMORY);
    }
    drop(hog);
    expect(&mut s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
}

#[test]
fn bdat_charges_are_freed_by_rset_refusal_and_drop() {
    let budget = ContentBudget::new(1000);
    let mut s = budgeted(&budget);
    expect(&mut s, MAIL_RCPT, MAIL_RCPT_OK);
    expect(
        &mut s,
        &format!("BDAT 600\r\n{}", "y".repeat(600)),
        "250 2.0.0 600 octets received\r\n",
    );
    assert!(budget.used_octets() >= 600);
    expect(&mut s, "RSET\r\n", "250 2.0.0 Ok\r\n");
    assert_eq!(budget.used_octets(), 0);
    // Over the budget: the chunk is swallowed, then 452, transaction over.
    let mut hog = budget.charge();
    assert!(hog.try_grow_to(700));
    expect(&mut s, MAIL_RCPT, MAIL_RCPT_OK);
    let chunk = format!("BDAT 400\r\n{}", "z".repeat(400));
    expect(&mut s, &chunk, NO_MEMORY);
    assert_eq!(budget.used_octets(), 700);
    hog.release();
    expect(
        &mut s,
        "BDAT 1 LAST\r\nq",
        "503 5.5.1 need MAIL command\r\n",
    );
    expect(&mut s, MAIL_RCPT, MAIL_RCPT_OK);
    expect(&mut s, "BDAT 300\r\n", "");
    expect(
        &mut s,
        &"w".repeat(300),
        "250 2.0.0 300 octets received\r\n",
    );
    assert!(budget.used_octets() >= 300);
    drop(s);
    assert_eq!(
        budget.used_octets(),
        0,
        "a dropped session gives its octets back"
    );
}
