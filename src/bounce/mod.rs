//! Delivery status notifications (RFC 3464 / RFC 3461) and bounce
//! classification.
//!
//! Owns: deciding which recipients of a message are due a DSN (the NOTIFY
//! rules), composing the `multipart/report` DSN as bytes together with its
//! null-sender envelope, and classifying remote replies into Momentum's
//! bounce classes. May call: `crate::message`, `smtp::status` (enhanced
//! codes), `smtp::reply` (the reply type); the `time` crate. Must never:
//! do I/O, read a clock (time comes in as a parameter), use randomness
//! (uniqueness comes from the caller's id string), or answer a null-sender
//! message with a DSN. `outbound::delivery`
//! calls `generate` and spools the returned DSN as a new message.

mod classify;
mod format;
mod notify;
mod render;

pub use classify::{classify, classify_reply, BounceClass, ALL_CLASSES};
pub use notify::is_due;

use crate::message::{BodyType, Envelope, Recipient};

/// What happened to one recipient (RFC 3464 §2.3.3 `Action:`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Permanent failure.
    Failed,
    /// Still being retried.
    Delayed,
    /// Delivered to the final mailbox.
    Delivered,
    /// Handed to a next hop that does not speak DSN.
    Relayed,
    /// Expanded into several recipients (alias, list).
    Expanded,
}

impl Action {
    /// The RFC 3464 action-value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    /// Status used when the report's own status is not a valid
    /// `class.subject.detail` code.
    fn fallback_status(self) -> &'static str {
        match self {
            Action::Failed => "5.0.0",
            Action::Delayed => "4.0.0",
            Action::Delivered | Action::Relayed | Action::Expanded => "2.0.0",
        }
    }
}

/// The outcome for one recipient, as the queue knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientReport {
    /// The recipient as accepted (address, NOTIFY, ORCPT).
    pub recipient: Recipient,
    /// What happened.
    pub action: Action,
    /// Enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// Host name of the remote MTA that answered, if any.
    pub remote_mta: Option<String>,
    /// The remote reply, e.g. `smtp; 550 5.1.1 user unknown` (a reply
    /// without a `type;` prefix gets `smtp; `).
    pub diagnostic: Option<String>,
    /// Time of the last delivery attempt, ms since the Unix epoch.
    pub last_attempt_ms: Option<u64>,
    /// For delays: when retrying stops, ms since the Unix epoch.
    pub will_retry_until_ms: Option<u64>,
}

/// How much of the original to quote (Momentum `bounces_inline_original`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum InlineOriginal {
    /// No third part.
    None,
    /// The header section as `text/rfc822-headers` (Momentum's default).
    #[default]
    Headers,
    /// The whole message as `message/rfc822`.
    All,
}

/// The options that shape a DSN (Momentum §1.4 "bounces / DSN").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsnSettings {
    /// The reporting MTA's host name (`Reporting-MTA`, `Message-ID`).
    pub hostname: String,
    /// `mailerdaemon`: the DSN's `From:` address.
    pub mailerdaemon: String,
    /// `bounces_inline_original`, used when the sender gave no RET.
    pub inline_original: InlineOriginal,
    /// `generate_delay_dsn`: delay DSNs for recipients without NOTIFY.
    pub generate_delay_dsn: bool,
}

impl DsnSettings {
    /// Momentum's defaults: `mailer-daemon@<hostname>`, headers quoted,
    /// no delay DSNs unless NOTIFY=DELAY asks for them.
    pub fn new(hostname: &str) -> DsnSettings {
        DsnSettings {
            hostname: hostname.to_string(),
            mailerdaemon: format!("mailer-daemon@{hostname}"),
            inline_original: InlineOriginal::Headers,
            generate_delay_dsn: false,
        }
    }
}

/// A generated DSN, ready to be queued as a new message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dsn {
    /// Null sender, one recipient (the original sender), received now.
    pub envelope: Envelope,
    /// The whole message, CRLF line endings.
    pub content: Vec<u8>,
}

/// Builds the DSN due for `reports` about the message (`original`,
/// `content`), or `None` when no recipient is due one (null-sender
/// original, NOTIFY=NEVER, NOTIFY not asking for this kind of event).
///
/// `now_ms` is the current time (ms since the Unix epoch); `unique_id`
/// (e.g. the original's message id plus an event counter) makes the
/// `Message-ID` and MIME boundary unique and the output deterministic.
pub fn generate(
    settings: &DsnSettings,
    original: &Envelope,
    content: &[u8],
    reports: &[RecipientReport],
    now_ms: u64,
    unique_id: &str,
) -> Option<Dsn> {
    if original.mail_from.is_empty() {
        return None;
    }
    let due: Vec<&RecipientReport> = reports
        .iter()
        .filter(|r| is_due(r, settings.generate_delay_dsn))
        .collect();
    if due.is_empty() {
        return None;
    }
    let rendered = render::render(&render::Input {
        settings,
        original,
        content,
        reports: &due,
        now_ms,
        unique_id,
    });
    let envelope = Envelope {
        mail_from: String::new(),
        ret: None,
        envid: None,
        body_type: if rendered.eight_bit {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        },
        smtputf8: !original.mail_from.is_ascii(),
        recipients: vec![Recipient {
            address: original.mail_from.clone(),
            notify: None,
            orcpt: None,
        }],
        auth_user: None,
        peer: None,
        helo: settings.hostname.clone(),
        received_at_ms: now_ms,
        binding: None,
    };
    Some(Dsn {
        envelope,
        content: rendered.bytes,
    })
}
