//! Settings of one server session, built by `inbound` from the `config`
//! snapshot per listener and peer.
//!
//! Owns `ServerSettings` and its defaults. May call: nothing (plain data).
//! Must never: do I/O, or default to an open relay (`can_relay` is false and
//! `relay_domains` empty unless configured).

/// Default command line limit: RFC 5321 says 512, extensions need more.
pub const DEFAULT_MAX_COMMAND_LINE_OCTETS: usize = 2048;
/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with CRLF.
pub const DEFAULT_MAX_DATA_LINE_OCTETS: usize = 1000;
/// Default message size limit.
pub const DEFAULT_MESSAGE_SIZE_OCTETS: u64 = 50 * 1024 * 1024;
/// Default recipients per message (RFC 5321 §4.5.3.1.8 asks for >= 100).
pub const DEFAULT_MAX_RECIPIENTS_PER_MESSAGE: usize = 1000;
/// Default client errors tolerated per session.
pub const DEFAULT_MAX_ERRORS_PER_SESSION: u32 = 20;

/// Per-listener (and per-peer) settings the session obeys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// Name in the banner, EHLO reply and 421s.
    pub hostname: String,
    /// Longest command line, CRLF included.
    pub max_command_line_octets: usize,
    /// Longest DATA line, CRLF included; longer lines fail the message.
    pub max_data_line_octets: usize,
    /// Largest message in octets, 0 = unlimited.
    pub message_size: u64,
    /// Most recipients per transaction (more get 452 4.5.3).
    pub max_recipients_per_message: usize,
    /// Client-caused error replies tolerated before 421 and close.
    pub max_errors_per_session: u32,
    /// Messages per connection, 0 = unlimited.
    pub max_receptions_per_connection: u32,
    /// MAIL before HELO/EHLO is refused.
    pub require_ehlo: bool,
    /// `MAIL FROM:<>` is accepted.
    pub allow_null_envelope_sender: bool,
    /// TLS is configured on this listener.
    pub starttls_available: bool,
    /// AUTH credentials are configured.
    pub auth_available: bool,
    /// AUTH only after STARTTLS.
    pub auth_requires_tls: bool,
    /// This peer may relay anywhere.
    pub can_relay: bool,
    /// Lower-case domains accepted from anyone (`*.d` = subdomains of d).
    pub relay_domains: Vec<String>,
    /// Refuse 8-bit content unless BODY=8BITMIME (or SMTPUTF8) was given.
    pub reject_8bit_without_8bitmime: bool,
}

impl Default for ServerSettings {
    /// Conservative defaults: RFC 5321 line limits, never an open relay.
    fn default() -> Self {
        ServerSettings {
            hostname: "localhost".to_string(),
            max_command_line_octets: DEFAULT_MAX_COMMAND_LINE_OCTETS,
            max_data_line_octets: DEFAULT_MAX_DATA_LINE_OCTETS,
            message_size: DEFAULT_MESSAGE_SIZE_OCTETS,
            max_recipients_per_message: DEFAULT_MAX_RECIPIENTS_PER_MESSAGE,
            max_errors_per_session: DEFAULT_MAX_ERRORS_PER_SESSION,
            max_receptions_per_connection: 0,
            require_ehlo: true,
            allow_null_envelope_sender: true,
            starttls_available: false,
            auth_available: false,
            auth_requires_tls: true,
            can_relay: false,
            relay_domains: Vec::new(),
            reject_8bit_without_8bitmime: false,
        }
    }
}
