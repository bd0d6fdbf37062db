//! The command-line parser alone, and what the session does with a parsed
//! MAIL/RCPT: parameters, addresses and xtext, on arbitrary text.

#![no_main]

use impulse::smtp::address::{domain_of, parse_mailbox};
use impulse::smtp::command::{
    address_reply, mail_params, parse_command, rcpt_params, xtext_decode, Command,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &str| {
    match parse_command(line) {
        Err(e) => {
            let _ = e.reply();
        }
        Ok(Command::Mail { path, params }) => {
            let utf8 = mail_params(&params).map_or(false, |p| p.smtputf8);
            if let Err(e) = parse_mailbox(path, utf8) {
                let _ = address_reply(e, true);
            }
        }
        Ok(Command::Rcpt { path, params }) => {
            let _ = rcpt_params(&params);
            match parse_mailbox(path, true) {
                Ok(m) => {
                    let _ = domain_of(m);
                }
                Err(e) => {
                    let _ = address_reply(e, false);
                }
            }
        }
        Ok(_) => {}
    }
    let _ = xtext_decode(line);
});
