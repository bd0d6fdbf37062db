//! SMTP AUTH (RFC 4954) for the server session: PLAIN (RFC 4616) and LOGIN
//! exchanges, up to the credentials handed to the driver.
//!
//! Owns the 334 challenge/response sequencing only; the driver checks the
//! credentials. May call: the session (`super`), `smtp::reply`, the `base64`
//! crate. Must never: do I/O, judge a password itself, read an exchange line
//! past `AUTH_LINE_MAX_OCTETS`, or pass on an authzid other than "" or the
//! user's own.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{Flow, Line, Phase, ServerSession, Step, AUTH_LINE_MAX_OCTETS};
use crate::reply::Reply;

/// Base64 of "Username:" (the customary LOGIN prompt).
const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
/// Base64 of "Password:".
const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

impl ServerSession {
    /// `AUTH mechanism [initial-response]`.
    pub(super) fn auth(&mut self, mechanism: &str, initial: Option<&str>) -> Flow {
        let refusal = if !self.settings.auth_available {
            Some(Reply::new(503, "5.5.1", "authentication not enabled"))
        } else if !self.auth_offered() {
            let text = "encryption required for requested authentication mechanism";
            Some(Reply::new(538, "5.7.11", text))
        } else if !self.esmtp {
            Some(Reply::new(503, "5.5.1", "send EHLO first"))
        } else if self.auth_user.is_some() {
            Some(Reply::new(503, "5.5.1", "already authenticated"))
        } else if self.txn.is_some() {
            Some(Reply::new(
                503,
                "5.5.1",
                "AUTH not allowed during a mail transaction",
            ))
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.respond(reply);
            return Flow::Continue;
        }
        match (mechanism.to_ascii_uppercase().as_str(), initial) {
            ("PLAIN", None) => {
                self.send(Reply::plain(334, ""));
                self.phase = Phase::AuthPlain;
                Flow::Continue
            }
            ("PLAIN", Some(resp)) => self.plain_response(resp),
            ("LOGIN", None) => {
                self.send(Reply::plain(334, LOGIN_USER_PROMPT));
                self.phase = Phase::AuthLoginUser;
                Flow::Continue
            }
            ("LOGIN", Some(resp)) => self.login_user(resp),
            _ => {
                self.respond(Reply::new(504, "5.5.4", "unrecognized authentication type"));
                Flow::Continue
            }
        }
    }

    /// Answer to `Step::Authenticate` when the driver will not check the
    /// credentials because the client's address is over its failed-AUTH
    /// budget: 421 4.7.0, then `Step::Close`.
    pub fn auth_refused_too_many_failures(&mut self) {
        if !matches!(self.phase, Phase::WaitAuth(_)) {
            return;
        }
        self.phase = Phase::Command;
        let text = format!(
            "{} too many failed authentications, try again later",
            self.settings.hostname
        );
        self.close_with(Reply::new(421, "4.7.0", text));
    }

    /// A line answering a 334 challenge.
    pub(super) fn auth_phase(&mut self) -> Flow {
        let line = match self.next_line(AUTH_LINE_MAX_OCTETS) {
            Line::Partial => return Flow::NeedInput,
            Line::TooLong => {
                self.phase = Phase::Command;
                self.error(Reply::new(
                    500,
                    "5.5.6",
                    "authentication exchange line is too long",
                ));
                return Flow::Continue;
            }
            Line::Complete(line) => line,
        };
        let line = String::from_utf8_lossy(&line).into_owned();
        match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::AuthPlain => self.plain_response(&line),
            Phase::AuthLoginUser => self.login_user(&line),
            Phase::AuthLoginPass(user) => match self.decode(&line) {
                Some(password) => self.credentials(String::new(), user, password),
                None => Flow::Continue,
            },
            other => {
                self.phase = other;
                Flow::Continue
            }
        }
    }

    /// PLAIN: `authzid NUL authcid NUL passwd`, base64-encoded.
    fn plain_response(&mut self, resp: &str) -> Flow {
        let Some(decoded) = self.decode(resp) else {
            return Flow::Continue;
        };
        let mut parts = decoded.split('\0');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(authzid), Some(user), Some(password), None) if !user.is_empty() => {
                let (a, u, p) = (authzid.to_string(), user.to_string(), password.to_string());
                self.credentials(a, u, p)
            }
            _ => {
                self.error(Reply::new(501, "5.5.2", "malformed PLAIN response"));
                Flow::Continue
            }
        }
    }

    fn login_user(&mut self, resp: &str) -> Flow {
        if let Some(user) = self.decode(resp) {
            self.send(Reply::plain(334, LOGIN_PASSWORD_PROMPT));
            self.phase = Phase::AuthLoginPass(user);
        }
        Flow::Continue
    }

    fn credentials(&mut self, authzid: String, user: String, password: String) -> Flow {
        // RFC 4616 §2: a server must refuse an authorization identity the
        // authenticated user may not act as. No user may act for another
        // here, so only "" (act as yourself) or the user's own name pass.
        // Refused before the password is checked, so it reveals nothing
        // about the password and is not a guess the driver has to slow.
        if !authzid.is_empty() && authzid != user {
            self.error(Reply::new(
                535,
                "5.7.8",
                "not authorized to act for the requested identity",
            ));
            return Flow::Continue;
        }
        self.phase = Phase::WaitAuth(user.clone());
        Flow::Yield(Step::Authenticate {
            authzid,
            user,
            password,
        })
    }

    /// Decodes a response; on `*` or bad base64/UTF-8 sends the error
    /// (the exchange is then over) and returns `None`. `=` is empty.
    fn decode(&mut self, resp: &str) -> Option<String> {
        self.phase = Phase::Command;
        if resp == "*" {
            self.error(Reply::new(501, "5.7.0", "authentication cancelled"));
            return None;
        }
        let bytes = if resp == "=" {
            Ok(Vec::new())
        } else {
            STANDARD.decode(resp.trim_end_matches(' '))
        };
        match bytes.ok().and_then(|b| String::from_utf8(b).ok()) {
            Some(s) => Some(s),
            None => {
                self.error(Reply::new(501, "5.5.2", "invalid base64 data"));
                None
            }
        }
    }
}
