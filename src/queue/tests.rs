use std::collections::HashMap;
use std::rc::Rc;

use super::*;

fn id(seq: u32) -> MessageId {
    MessageId {
        epoch_ms: 1,
        shard: 0,
        seq,
    }
}

/// The destination of a domain from the default binding.
fn dest(domain: &str) -> Dest {
    Dest {
        binding: BindingId::default(),
        domain: domain.into(),
    }
}

fn rcpt(index: u32, address: &str) -> QueuedRcpt {
    QueuedRcpt {
        index,
        address: address.into(),
    }
}

/// A reply as a server would send it (`"451 4.3.0 busy"`).
fn ok(s: &str) -> Rc<Reply> {
    let wire = format!("{s}\r\n");
    let reply = crate::smtp::client::ReplyParser::new()
        .next_reply(&mut wire.as_bytes())
        .unwrap()
        .unwrap();
    Rc::new(reply)
}

#[test]
fn ready_per_domain_and_settle_done() {
    let mut q = Queue::new();
    let woke = q.insert(
        Entry::new(
            id(1),
            0,
            0,
            0,
            vec![
                rcpt(0, "a@x.test"),
                rcpt(1, "b@Y.test"),
                rcpt(2, "c@x.test"),
            ],
        ),
        10,
    );
    assert_eq!(woke.len(), 2);
    let jx = q.take(&dest("x.test")).unwrap();
    assert_eq!(jx.recipients.len(), 2);
    let jy = q.take(&dest("y.test")).unwrap();
    assert!(q.take(&dest("x.test")).is_none());
    let p = RetryPolicy::default();
    let s = q.settle(
        &jx,
        &[
            (0, RcptResult::Delivered(ok("250 ok"))),
            (2, RcptResult::Failed(ok("550 no"))),
        ],
        &p,
        20,
    );
    assert_eq!(s.next, Next::Waiting);
    assert_eq!(s.finals.len(), 2);
    let s = q.settle(&jy, &[(1, RcptResult::Delivered(ok("250 ok")))], &p, 20);
    assert_eq!(s.next, Next::Done);
    assert!(q.is_empty());
}

#[test]
fn a_message_waits_for_every_domain_even_when_one_is_not_taken_yet() {
    let mut q = Queue::new();
    q.insert(
        Entry::new(
            id(1),
            0,
            0,
            0,
            vec![rcpt(0, "a@x.test"), rcpt(1, "b@y.test")],
        ),
        0,
    );
    let jx = q.take(&dest("x.test")).unwrap();
    let s = q.settle(
        &jx,
        &[(0, RcptResult::Delivered(ok("250")))],
        &RetryPolicy::default(),
        1,
    );
    assert_eq!(s.next, Next::Waiting, "y.test's job is still queued");
    let jy = q.take(&dest("y.test")).unwrap();
    let s = q.settle(
        &jy,
        &[(1, RcptResult::Deferred(ok("451 later")))],
        &RetryPolicy::default(),
        1,
    );
    assert_eq!(
        s.next,
        Next::Retry {
            at: 1 + 1_200_000,
            attempts: 1
        }
    );
    // Only the deferred domain comes back.
    assert!(q.wake(1_200_000).is_empty());
    assert_eq!(q.wake(1_200_001), vec![dest("y.test")]);
    assert!(q.take(&dest("x.test")).is_none());
    assert_eq!(
        q.take(&dest("y.test")).unwrap().recipients,
        vec![rcpt(1, "b@y.test")]
    );
}

#[test]
fn delayed_entries_wait_for_their_time() {
    let mut q = Queue::new();
    assert!(q
        .insert(
            Entry::new(id(1), 0, 2, 5_000, vec![rcpt(0, "a@x.test")]),
            1_000
        )
        .is_empty());
    assert_eq!(q.next_wakeup(), Some(5_000));
    assert!(q.take(&dest("x.test")).is_none());
    assert!(q.wake(4_999).is_empty());
    assert_eq!(q.wake(5_000).len(), 1);
    assert!(q.take(&dest("x.test")).is_some());
}

#[test]
fn missing_results_count_as_deferred() {
    let mut q = Queue::new();
    q.insert(
        Entry::new(
            id(1),
            0,
            0,
            0,
            vec![rcpt(0, "a@x.test"), rcpt(1, "b@x.test")],
        ),
        0,
    );
    let j = q.take(&dest("x.test")).unwrap();
    let s = q.settle(
        &j,
        &[(0, RcptResult::Delivered(ok("250")))],
        &RetryPolicy::default(),
        0,
    );
    assert!(matches!(s.next, Next::Retry { attempts: 1, .. }));
    assert_eq!(q.get(&id(1)).unwrap().pending(), &[rcpt(1, "b@x.test")]);
}

#[test]
fn expiry_fails_the_rest_with_the_last_error() {
    let p = RetryPolicy {
        message_expiration_ms: 10_000,
        retry_interval_ms: 4_000,
        ..Default::default()
    };
    let mut q = Queue::new();
    q.insert(Entry::new(id(1), 0, 0, 0, vec![rcpt(0, "a@x.test")]), 0);
    let mut now = 0;
    loop {
        q.wake(now);
        let j = q.take(&dest("x.test")).unwrap();
        let s = q.settle(
            &j,
            &[(0, RcptResult::Deferred(ok("451 4.3.0 busy")))],
            &p,
            now,
        );
        match s.next {
            Next::Retry { at, .. } => {
                assert!(at <= 10_000);
                now = at;
            }
            Next::Done => {
                assert_eq!(now, 10_000, "the last attempt is at the expiry time");
                let recorded = s.finals[0].reply.to_string();
                assert!(
                    recorded.starts_with("554 5.4.7 [internal] exceeded max time without delivery")
                        && recorded.contains("451 4.3.0 busy")
                );
                assert!(is_expiry(&s.finals[0].reply));
                assert!(!s.finals[0].delivered);
                break;
            }
            Next::Waiting => panic!("single domain"),
        }
    }
    assert!(q.is_empty());
}

#[test]
fn only_the_expiry_reply_counts_as_expiry() {
    let expired = gave_up(EXPIRED_TEXT, Some(&ok("451 4.3.0 busy")));
    assert_eq!(
        expired.to_string(),
        "554 5.4.7 [internal] exceeded max time without delivery (last error: 451 4.3.0 busy)"
    );
    assert!(is_expiry(&expired) && is_expiry(&gave_up(EXPIRED_TEXT, None)));
    let retries = gave_up(RETRIES_TEXT, None);
    assert_eq!(
        retries.to_string(),
        "554 5.4.7 [internal] exceeded max retries without delivery"
    );
    assert!(!is_expiry(&retries));
    // A remote server saying so is not our expiry.
    assert!(!is_expiry(&ok(
        "554 5.4.7 exceeded max time without delivery"
    )));
}

#[test]
fn take_all_for_an_unreachable_domain() {
    let mut q = Queue::new();
    for n in 0..5 {
        q.insert(Entry::new(id(n), 0, 0, 0, vec![rcpt(0, "a@dead.test")]), 0);
    }
    q.insert(Entry::new(id(9), 0, 0, 0, vec![rcpt(0, "a@live.test")]), 0);
    let jobs = q.take_up_to(&dest("dead.test"), usize::MAX);
    assert_eq!(jobs.len(), 5);
    for j in &jobs {
        let s = q.settle(
            j,
            &[(0, RcptResult::Deferred(ok("421 no route")))],
            &RetryPolicy::default(),
            0,
        );
        assert!(matches!(s.next, Next::Retry { .. }));
    }
    assert_eq!(q.ready_dests(), vec![dest("live.test")]);
}

#[test]
fn take_up_to_hands_out_a_domain_in_pieces() {
    let mut q = Queue::new();
    for n in 0..5 {
        q.insert(Entry::new(id(n), 0, 0, 0, vec![rcpt(0, "a@dead.test")]), 0);
    }
    let first = q.take_up_to(&dest("dead.test"), 2);
    assert_eq!(
        first.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![id(0), id(1)]
    );
    assert_eq!(q.ready_len(&dest("dead.test")), 3);
    assert_eq!(q.take_up_to(&dest("dead.test"), 10).len(), 3);
    assert!(q.take_up_to(&dest("dead.test"), 10).is_empty());
}

/// xorshift64*: deterministic randomness for the simulation.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A simulated day and a half of deliveries with random outcomes: every
/// recipient ends exactly once, never after its expiry, never before its
/// retry time, and retry times follow the policy.
#[test]
fn simulated_days_of_retries() {
    for seed in [1u64, 7, 42, 1234] {
        let mut rng = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
        let p = RetryPolicy::default();
        let mut q = Queue::new();
        let domains = ["a.test", "b.test", "c.test", "slow.test"];
        let mut expected = 0usize;
        let mut received: HashMap<MessageId, u64> = HashMap::new();
        for n in 0..400u32 {
            let at = rng.below(3_600_000);
            let rcpts: Vec<QueuedRcpt> = (0..1 + rng.below(3) as u32)
                .map(|i| rcpt(i, &format!("u{i}@{}", domains[rng.below(4) as usize])))
                .collect();
            expected += rcpts.len();
            received.insert(id(n), at);
            q.insert(Entry::new(id(n), at, 0, at, rcpts), 0);
        }
        let mut settled: HashMap<(MessageId, u32), u64> = HashMap::new();
        let mut now = 0u64;
        let mut steps = 0;
        while !q.is_empty() {
            steps += 1;
            assert!(steps < 100_000, "seed {seed}: no progress");
            now = q.next_wakeup().map_or(now, |t| t.max(now));
            q.wake(now);
            for d in q.ready_dests() {
                while let Some(job) = q.take(&d) {
                    assert!(
                        now >= q.get(&job.id).unwrap().next_attempt_ms,
                        "never before the retry time"
                    );
                    let results: Vec<(u32, RcptResult)> = job
                        .recipients
                        .iter()
                        .map(|r| {
                            let roll = rng.below(100);
                            let res = if &*d.domain == "slow.test" || roll < 60 {
                                RcptResult::Deferred(ok("451 try later"))
                            } else if roll < 90 {
                                RcptResult::Delivered(ok("250 ok"))
                            } else {
                                RcptResult::Failed(ok("550 no"))
                            };
                            (r.index, res)
                        })
                        .collect();
                    let s = q.settle(&job, &results, &p, now);
                    for f in &s.finals {
                        assert!(
                            settled.insert((s.id, f.rcpt.index), now).is_none(),
                            "settled twice"
                        );
                        assert!(now <= p.expires_at(received[&s.id]), "settled after expiry");
                    }
                    if let Next::Retry { at, attempts } = s.next {
                        assert!(at > now && at <= now + p.delay_ms(attempts));
                    }
                }
            }
        }
        assert_eq!(
            settled.len(),
            expected,
            "seed {seed}: every recipient settled exactly once"
        );
        assert!(
            now <= 3_600_000 + 86_400_000,
            "seed {seed}: everything ends by expiry"
        );
    }
}

#[test]
fn delay_notices_at_doubling_ages() {
    let mut q = Queue::new();
    q.insert(
        Entry::new(id(1), 1_000, 0, 0, vec![rcpt(0, "a@x.test")]),
        1_000,
    );
    let hour = 3_600_000;
    assert!(q
        .delay_notice_due(&id(1), hour, 4 * hour, 1_000 + hour - 1)
        .is_none());
    assert!(q
        .delay_notice_due(&id(1), hour, 4 * hour, 1_000 + hour)
        .is_some());
    assert!(
        q.delay_notice_due(&id(1), hour, 4 * hour, 1_000 + hour)
            .is_none(),
        "once per step"
    );
    assert!(q
        .delay_notice_due(&id(1), hour, 4 * hour, 1_000 + 3 * hour - 1)
        .is_none());
    assert!(q
        .delay_notice_due(&id(1), hour, 4 * hour, 1_000 + 3 * hour)
        .is_some());
    // Gaps cap at the maximum: 1h, 2h, 4h, 4h, ...
    assert!(q
        .delay_notice_due(&id(1), hour, 4 * hour, 1_000 + 7 * hour)
        .is_some());
    assert!(q
        .delay_notice_due(&id(1), hour, 4 * hour, 1_000 + 11 * hour)
        .is_some());
    assert_eq!(q.get(&id(1)).unwrap().delay_notices, 4);
}

/// Memory per deferred message, as `perf/queue_1m.sh` makes it: 1,000,000
/// one-recipient messages recovered, handed out, deferred. Prints the
/// queue's heap bytes per message (run alone:
/// `cargo test --release --lib queue_memory -- --ignored --nocapture --test-threads=1`).
#[test]
#[ignore = "measurement: run alone"]
fn queue_memory_per_deferred_message() {
    const N: u32 = 1_000_000;
    let before = crate::runtime::heap_in_use();
    let mut q = Queue::new();
    for n in 0..N {
        q.insert(
            Entry::new(id(n), 1, 0, 0, vec![rcpt(0, "queued@example.net")]),
            1,
        );
    }
    let reply = ok("421 4.4.0 connection refused");
    let p = RetryPolicy::default();
    for j in q.take_up_to(&dest("example.net"), usize::MAX) {
        let s = q.settle(&j, &[(0, RcptResult::Deferred(reply.clone()))], &p, 2);
        assert!(matches!(s.next, Next::Retry { .. }));
    }
    assert_eq!((q.len(), q.delayed_len()), (N as usize, N as usize));
    let used = crate::runtime::heap_in_use() - before;
    println!(
        "queue: {} bytes per deferred message ({} with the 18-octet address)",
        (used - N as usize * 32) / N as usize,
        used / N as usize
    );
}

#[test]
fn a_held_message_stays_small() {
    // A million queued messages (perf/queue_1m.sh): 72 bytes each before
    // their recipients.
    assert!(std::mem::size_of::<Held>() <= 72);
}

#[test]
fn rebind_moves_only_messages_whose_one_job_is_held() {
    let mut q = Queue::new();
    let (held, other) = (BindingId(1), BindingId(2));
    let from = |d: &str| Dest {
        binding: held,
        domain: d.into(),
    };
    for n in 1..=4 {
        q.insert(
            Entry::new(id(n), 0, 0, 0, vec![rcpt(0, "a@x.test")]).from(held),
            10,
        );
    }
    // Message 5 also has a job for y.test out: it stays until that settles.
    q.insert(
        Entry::new(
            id(5),
            0,
            0,
            0,
            vec![rcpt(0, "a@x.test"), rcpt(1, "b@y.test")],
        )
        .from(held),
        10,
    );
    let jy = q.take(&from("y.test")).unwrap();
    // At most three moves in this pass.
    let (moved, ready) = q.rebind(&from("x.test"), 3, || Some(other));
    assert_eq!(moved, vec![(id(1), other), (id(2), other), (id(3), other)]);
    assert_eq!(
        ready,
        vec![Dest {
            binding: other,
            domain: "x.test".into()
        }]
    );
    assert_eq!(q.ready_len(&from("x.test")), 2);
    assert_eq!(q.get(&id(1)).unwrap().binding, other);
    // No target: nothing moves.
    assert!(q.rebind(&from("x.test"), 10, || None).0.is_empty());
    // Once y.test is settled, message 5 may move too.
    let policy = RetryPolicy::default();
    q.settle(
        &jy,
        &[(1, RcptResult::Delivered(ok("250 ok")))],
        &policy,
        20,
    );
    let (moved, _) = q.rebind(&from("x.test"), 10, || Some(other));
    assert_eq!(moved, vec![(id(4), other), (id(5), other)]);
    assert_eq!(q.ready_len(&from("x.test")), 0);
    let to = Dest {
        binding: other,
        domain: "x.test".into(),
    };
    let mut sent = Vec::new();
    while let Some(j) = q.take(&to) {
        assert_eq!(j.binding, other);
        sent.push(j.id);
    }
    assert_eq!(sent, (1..=5).map(id).collect::<Vec<_>>());
}
