use std::time::Duration;

use super::*;
use crate::config::{BackoffAction, BackoffRule};

fn rule() -> BackoffRule {
    BackoffRule {
        name: "slow".into(),
        code: Some("421".into()),
        status: None,
        text: None,
        domains: Vec::new(),
        action: BackoffAction::Connections(1),
        duration: Duration::from_millis(200),
        recover_after: Duration::from_millis(100),
        steps: 2,
    }
}

#[test]
fn a_reported_reply_is_in_force_listed_and_then_recovers() {
    crate::runtime::on_executor(|| async {
        let t = Throttles::standalone();
        let key: Arc<str> = "example.net@vip1".into();
        assert_eq!(t.effect(&key), None);
        t.report_backoff(key.clone(), &rule(), "421 slow down".into(), 4);
        // A second report within the interval is not sent again.
        t.report_backoff(key.clone(), &rule(), "421 slow down".into(), 4);
        let mut seen = Vec::new();
        let deadline = sched::now() + Duration::from_secs(10);
        while sched::now() < deadline {
            let now = t.backoffs();
            if seen.last() != Some(&now) {
                seen.push(now.clone());
            }
            if seen.len() > 1 && now.is_empty() {
                break;
            }
            sched::sleep(Duration::from_millis(5)).await;
        }
        let row = |change: &str, allows: &str| {
            vec![(
                "vip1".to_string(),
                "example.net".to_string(),
                "slow".to_string(),
                change.to_string(),
                allows.to_string(),
            )]
        };
        assert_eq!(
            seen,
            vec![
                vec![],
                row("started", "1 connection(s)"),
                row("step 1/2", "2 connection(s)"),
                vec![],
            ]
        );
    });
}
