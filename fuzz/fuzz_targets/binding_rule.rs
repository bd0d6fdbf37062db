//! `regex_binding2` rules and the suspended-bindings file on arbitrary
//! text: a rule parses or says where it is wrong, never panics, and one
//! that parses is matched against a message without panicking; the file
//! parses or names its bad line, and what parses writes back to the same
//! set.

#![no_main]

use impulse::binding::Suspended;
use impulse::config::rule::{Fields, Rule};
use libfuzzer_sys::fuzz_target;

struct Msg;

impl Fields for Msg {
    fn mail_from(&self) -> &str {
        "news@shop.example"
    }
    fn rcpt_to(&self) -> &[&str] {
        &["a@gmail.example", "b@yahoo.example"]
    }
    fn header(&self, name: &str) -> Option<String> {
        Some(format!("value of {name}"))
    }
    fn recv_ip(&self) -> Option<String> {
        Some("127.0.0.1".into())
    }
    fn recv_port(&self) -> Option<String> {
        Some("25".into())
    }
    fn sender_ip(&self) -> Option<String> {
        None
    }
}

fuzz_target!(|text: &str| {
    match Rule::parse(text) {
        Ok(rule) => {
            let _ = rule.matches(&Msg);
        }
        Err(e) => assert!(e.column <= text.chars().count(), "{e}"),
    }
    if let Ok(set) = Suspended::parse(text) {
        assert_eq!(Suspended::parse(&set.to_text()), Ok(set));
    }
});
