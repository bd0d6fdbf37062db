//! The RFC 3461 NOTIFY rules: which recipient reports get a DSN.
//!
//! Pure predicate over a report. May call: `bounce` (`Action`,
//! `RecipientReport`). Must never: do I/O.

use super::{Action, RecipientReport};

/// True when `report` must appear in a DSN to the sender.
///
/// * NOTIFY=NEVER: never.
/// * No NOTIFY: failures always; delays only when `generate_delay_dsn`
///   (Momentum's `generate_delay_dsn`, default off); successes never.
/// * Explicit NOTIFY: failures with FAILURE, delays with DELAY (the
///   sender asked, so the config switch does not apply), successes
///   (delivered, relayed, expanded) with SUCCESS.
pub fn is_due(report: &RecipientReport, generate_delay_dsn: bool) -> bool {
    match report.recipient.notify {
        Some(n) if n.never => false,
        Some(n) if !n.is_default() => match report.action {
            Action::Failed => n.failure,
            Action::Delayed => n.delay,
            Action::Delivered | Action::Relayed | Action::Expanded => n.success,
        },
        _ => match report.action {
            Action::Failed => true,
            Action::Delayed => generate_delay_dsn,
            Action::Delivered | Action::Relayed | Action::Expanded => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Notify, Recipient};

    fn report(notify: Option<Notify>, action: Action) -> RecipientReport {
        RecipientReport {
            recipient: Recipient {
                address: "rcpt@example.net".into(),
                notify,
                orcpt: None,
            },
            action,
            status: "5.1.1".into(),
            remote_mta: None,
            diagnostic: None,
            last_attempt_ms: None,
            will_retry_until_ms: None,
        }
    }

    const NEVER: Notify = Notify {
        never: true,
        success: false,
        failure: false,
        delay: false,
    };
    const FAILURE: Notify = Notify {
        never: false,
        success: false,
        failure: true,
        delay: false,
    };
    const DELAY: Notify = Notify {
        never: false,
        success: false,
        failure: false,
        delay: true,
    };
    const SUCCESS: Notify = Notify {
        never: false,
        success: true,
        failure: false,
        delay: false,
    };
    const ALL: Notify = Notify {
        never: false,
        success: true,
        failure: true,
        delay: true,
    };

    #[test]
    fn notify_table() {
        use Action::*;
        // (notify, action, generate_delay_dsn, expected)
        let cases: &[(Option<Notify>, Action, bool, bool)] = &[
            (None, Failed, false, true),
            (None, Delayed, false, false),
            (None, Delayed, true, true),
            (None, Delivered, true, false),
            (None, Relayed, true, false),
            (Some(Notify::default()), Failed, false, true),
            (Some(Notify::default()), Delayed, true, true),
            (Some(NEVER), Failed, true, false),
            (Some(NEVER), Delayed, true, false),
            (Some(NEVER), Delivered, true, false),
            (Some(FAILURE), Failed, false, true),
            (Some(FAILURE), Delayed, true, false),
            (Some(FAILURE), Delivered, true, false),
            (Some(DELAY), Failed, false, false),
            (Some(DELAY), Delayed, false, true),
            (Some(SUCCESS), Failed, false, false),
            (Some(SUCCESS), Delivered, false, true),
            (Some(SUCCESS), Relayed, false, true),
            (Some(SUCCESS), Expanded, false, true),
            (Some(ALL), Failed, false, true),
            (Some(ALL), Delayed, false, true),
            (Some(ALL), Delivered, false, true),
        ];
        for (i, (notify, action, delay_cfg, want)) in cases.iter().enumerate() {
            assert_eq!(
                is_due(&report(*notify, *action), *delay_cfg),
                *want,
                "case {i}: {notify:?} {action:?} delay_cfg={delay_cfg}"
            );
        }
    }
}
