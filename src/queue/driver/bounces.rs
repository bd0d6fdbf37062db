//! Turning failures and long deferrals into DSNs: each DSN is a new
//! message in the same shard's spool, queued like any other once durable.
//!
//! Owns the DSN's recipient reports (status, diagnostic, retry-until) and
//! its injection. May call: bounce (composition), the spool (id and the
//! write, from the reserve when the disk is full), message, config, smtp
//! (the reply type, the status parser). Must never: queue a DSN before it
//! is durable.

use super::ShardQueue;
use crate::bounce::{self, Action, DsnSettings, InlineOriginal, RecipientReport};
use crate::config::Delivery;
use crate::events::Subsystem;
use crate::message::{Content, Envelope, MessageId, Recipient};
use crate::queue::{is_expiry, Final};
use crate::reply::status::EnhancedStatus;
use crate::reply::Reply;
use crate::runtime::sched;
use crate::spool::SpoolError;

/// The enhanced status a DSN reports for a failure reply: its own (or one
/// of another class at the start of its text), else by its code's class.
fn status_of(reply: &Reply) -> String {
    if is_expiry(reply) {
        // RFC 3463 X.4.7: delivery time expired.
        return "4.4.7".to_string();
    }
    let in_text = || {
        let first = reply.lines.first().map_or("", String::as_str);
        EnhancedStatus::at_start(0, first.trim_start())
    };
    match reply.enhanced.or_else(in_text) {
        Some(e) => e.to_string(),
        None if reply.is_transient() => "4.0.0".to_string(),
        None => "5.0.0".to_string(),
    }
}

/// A DSN made and not yet queued.
pub(super) struct Dsn {
    id: MessageId,
    envelope: Envelope,
    content: Content,
}

impl ShardQueue {
    /// Makes the DSN for the failed recipients of a message, if one is due
    /// (none for a null sender, or when the original cannot be read: that
    /// is logged, and no retry can make it readable).
    pub(super) async fn make_dsn(
        &self,
        id: MessageId,
        failures: &[&Final],
        remote: Option<&str>,
        d: &Delivery,
    ) -> Option<Dsn> {
        let (env, content) = match self.fetch(id).await {
            Ok(x) => x,
            Err(e) => {
                self.events.panic(
                    Subsystem::Spool,
                    &format!("no DSN for {id}: cannot read it: {e}"),
                );
                return None;
            }
        };
        let now = sched::wall_ms();
        let reports: Vec<RecipientReport> = failures
            .iter()
            .map(|f| RecipientReport {
                recipient: env
                    .recipients
                    .get(f.rcpt.index as usize)
                    .cloned()
                    .unwrap_or_else(|| Recipient::new(f.rcpt.address.to_string())),
                action: Action::Failed,
                status: status_of(&f.reply),
                remote_mta: remote.map(str::to_string),
                diagnostic: Some(format!("smtp; {}", f.reply)),
                last_attempt_ms: Some(now),
                will_retry_until_ms: None,
            })
            .collect();
        self.generate_dsn(d, &env, &content, &reports, now)
    }

    /// Renders a DSN about `reports` under a new spool id; `None` when none
    /// is sent (a null sender).
    fn generate_dsn(
        &self,
        d: &Delivery,
        env: &Envelope,
        content: &Content,
        reports: &[RecipientReport],
        now: u64,
    ) -> Option<Dsn> {
        let settings = self.dsn_settings(d);
        let id = self.spool.allocate_id();
        // The DSN quotes the original: the one place its parts are joined
        // (content read back from the spool is one part already).
        let joined;
        let original = if content.head().is_empty() {
            content.body()
        } else {
            joined = content.to_vec();
            &joined
        };
        let dsn = bounce::generate(&settings, env, original, reports, now, &id.to_string())?;
        Some(Dsn {
            id,
            envelope: dsn.envelope,
            content: Content::from(dsn.content),
        })
    }

    /// Spools a DSN (from the reserve, if the disk is full).
    pub(super) async fn store_dsn(&self, dsn: &Dsn) -> Result<(), SpoolError> {
        self.spool
            .append_generated_content(dsn.id, &dsn.envelope, &dsn.content)
            .await
    }

    /// Queues a DSN once it is durable.
    pub(super) fn accept_dsn(&self, dsn: Dsn) {
        log::info!(
            "shard {}: DSN {} queued for <{}>",
            self.shard,
            dsn.id,
            dsn.envelope
                .recipients
                .first()
                .map_or("", |r| r.address.as_str())
        );
        self.accept(dsn.id, dsn.envelope, dsn.content);
    }

    /// Spools a delay DSN for a deferred message when one is due (Momentum's
    /// delay_dsn: `generate_delay_dsn`, or NOTIFY=DELAY from the client).
    pub(super) async fn delay_notice(&self, id: MessageId, d: &Delivery) {
        let due = self.queue.borrow_mut().delay_notice_due(
            &id,
            d.delay_dsn_retry_interval.as_millis() as u64,
            d.delay_dsn_max_retry_interval.as_millis() as u64,
            sched::wall_ms(),
        );
        let Some((pending, last)) = due else { return };
        let Ok((env, content)) = self.fetch(id).await else {
            return;
        };
        let now = sched::wall_ms();
        let until = d.retry.expires_at(env.received_at_ms);
        let reports: Vec<RecipientReport> = pending
            .iter()
            .map(|q| RecipientReport {
                recipient: env
                    .recipients
                    .get(q.index as usize)
                    .cloned()
                    .unwrap_or_else(|| Recipient::new(q.address.to_string())),
                action: Action::Delayed,
                status: last.as_deref().map_or("4.0.0".to_string(), status_of),
                remote_mta: None,
                diagnostic: last.as_deref().map(|l| format!("smtp; {l}")),
                last_attempt_ms: Some(now),
                will_retry_until_ms: Some(until),
            })
            .collect();
        if let Some(dsn) = self.generate_dsn(d, &env, &content, &reports, now) {
            // A delay notice is advice: one that cannot be stored now is
            // logged, and the next one is due at the next interval.
            match self.store_dsn(&dsn).await {
                Ok(()) => self.accept_dsn(dsn),
                Err(e) => self.events.panic(
                    Subsystem::Spool,
                    &format!("storing delay DSN {}: {e}", dsn.id),
                ),
            }
        }
    }

    fn dsn_settings(&self, d: &Delivery) -> DsnSettings {
        DsnSettings {
            hostname: self.config.get().hostname.clone(),
            mailerdaemon: d.mailerdaemon.clone(),
            inline_original: match d.bounces_inline_original.as_str() {
                "none" => InlineOriginal::None,
                "all" => InlineOriginal::All,
                _ => InlineOriginal::Headers,
            },
            generate_delay_dsn: d.generate_delay_dsn,
        }
    }
}

#[cfg(test)]
mod tests {
    /// A reply as a server would send it.
    fn status_of(reply: &str) -> String {
        let wire = format!("{reply}\r\n");
        let reply = crate::smtp::client::ReplyParser::new()
            .next_reply(&mut wire.as_bytes())
            .unwrap()
            .unwrap();
        super::status_of(&reply)
    }

    #[test]
    fn statuses() {
        assert_eq!(status_of("550 5.1.1 no such user"), "5.1.1");
        assert_eq!(status_of("550 no such user"), "5.0.0");
        assert_eq!(
            status_of(
                "554 5.4.7 [internal] exceeded max time without delivery (last error: 451 x)"
            ),
            "4.4.7"
        );
        assert_eq!(
            status_of("550 5.1.10 [internal] NULL MX domain does not accept mail"),
            "5.1.10"
        );
    }
}
