use super::*;

fn d(name: &str) -> Arc<str> {
    Arc::from(name)
}

fn slots(out: &[(u32, Grant)]) -> Vec<(u32, u32)> {
    out.iter()
        .map(|(who, g)| match g {
            Grant::Slots(n) => (*who, *n),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn item(domain: &str, returned: u32, holding: u32) -> SyncItem {
    SyncItem {
        domain: d(domain),
        returned,
        holding,
        limit: 5,
    }
}

#[test]
fn slots_are_granted_up_to_the_limit_and_waiters_get_returns_in_order() {
    let t0 = Instant::now();
    let mut l: Ledger<u32> = Ledger::new(3);
    let x = d("x.test");
    assert_eq!(slots(&l.ask_slots(&x, 0, 4, 5, 100, t0)), [(100, 4)]);
    // One is free: a partial grant.
    assert_eq!(slots(&l.ask_slots(&x, 1, 3, 5, 101, t0)), [(101, 1)]);
    // None free: these wait, in order.
    assert!(l.ask_slots(&x, 1, 2, 5, 102, t0).is_empty());
    assert!(l.ask_slots(&x, 2, 2, 5, 103, t0).is_empty());
    assert_eq!(l.holdings("x.test"), [4, 1, 0]);
    // Shard 0 gives back 3: the first waiter gets 2, the next 1.
    let (targets, out) = l.sync(0, &[item("x.test", 3, 1)], t0);
    assert_eq!(slots(&out), [(102, 2), (103, 1)]);
    assert_eq!(l.holdings("x.test"), [1, 3, 1]);
    assert_eq!(l.holdings("x.test").iter().sum::<u32>(), 5);
    // Nobody waits: the target is the limit.
    assert_eq!(targets, [(x.clone(), 5)]);
    // Another domain is counted apart.
    assert_eq!(
        slots(&l.ask_slots(&d("y.test"), 0, 9, 5, 104, t0)),
        [(104, 5)]
    );
}

#[test]
fn while_a_shard_waits_holders_are_asked_down_to_a_fair_share() {
    let t0 = Instant::now();
    let mut l: Ledger<u32> = Ledger::new(2);
    let x = d("x.test");
    assert_eq!(slots(&l.ask_slots(&x, 0, 5, 5, 1, t0)), [(1, 5)]);
    assert!(l.ask_slots(&x, 1, 5, 5, 2, t0).is_empty());
    let (targets, out) = l.sync(0, &[item("x.test", 0, 5)], t0);
    assert!(out.is_empty());
    assert_eq!(targets, [(x.clone(), 3)], "5 over 2 shards, rounded up");
    // Shard 0 ends two tasks and returns their slots: the waiter gets them.
    let (_, out) = l.sync(0, &[item("x.test", 2, 3)], t0);
    assert_eq!(slots(&out), [(2, 2)]);
    assert_eq!(l.holdings("x.test"), [3, 2]);
}

#[test]
fn a_silent_holder_loses_its_slots_and_a_live_one_keeps_them() {
    let t0 = Instant::now();
    let mut l: Ledger<u32> = Ledger::new(2);
    let x = d("x.test");
    l.ask_slots(&x, 0, 5, 5, 1, t0);
    assert!(l.ask_slots(&x, 1, 1, 5, 2, t0).is_empty());
    let (out, lapsed) = l.tick(t0 + LEASE_TTL / 2);
    assert!(out.is_empty() && lapsed.is_empty());
    let (out, lapsed) = l.tick(t0 + LEASE_TTL);
    assert_eq!(
        lapsed,
        [Lapsed {
            domain: x.clone(),
            shard: 0,
            slots: 5
        }]
    );
    assert_eq!(slots(&out), [(2, 1)]);
    // Shard 0 was alive after all: what it holds is counted again (over
    // the limit for a moment; its target brings it down: 3 and 2 make 5).
    let (targets, _) = l.sync(0, &[item("x.test", 0, 5)], t0 + LEASE_TTL);
    assert_eq!(l.holdings("x.test"), [5, 1]);
    assert_eq!(targets, [(x, 3)]);
}

/// Two shards take `count`/`per` tokens as fast as they are given and use
/// each at a random moment of its lifetime; returns the times of use.
fn run_rate(count: u32, per: Duration, secs: u64, seed: u64) -> (Vec<Duration>, [u32; 2]) {
    let t0 = Instant::now();
    let rate = Rate { count, per };
    let key = RateKey {
        kind: RateKind::Messages,
        scope: ThrottleScope::Global,
    };
    let mut l: Ledger<usize> = Ledger::new(2);
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut uses = Vec::new();
    let mut per_shard = [0u32; 2];
    let mut asking = [false; 2];
    let step = Duration::from_micros(500);
    let mut now = t0;
    while now < t0 + Duration::from_secs(secs) {
        let mut grants = l.tick(now).0;
        for (shard, asks) in asking.iter_mut().enumerate() {
            if !*asks {
                *asks = true;
                grants.extend(l.ask_tokens(&key, shard, 4, rate, shard, now));
            }
        }
        for (shard, g) in grants {
            let Grant::Tokens { count, expires } = g else {
                panic!("{g:?}")
            };
            assert!(expires > now);
            asking[shard] = false;
            per_shard[shard] += count;
            let life = (expires - now).as_nanos() as u64;
            for _ in 0..count {
                let at = now + Duration::from_nanos(next() % life.max(1));
                uses.push(at - t0);
            }
        }
        now += step;
    }
    uses.sort();
    (uses, per_shard)
}

/// Most and fewest uses in any window of length `per` within the run
/// (windows wholly inside it, from 1 s in).
fn window_extremes(uses: &[Duration], per: Duration, secs: u64) -> (usize, usize) {
    let (mut most, mut fewest) = (0, usize::MAX);
    let mut start = Duration::from_secs(1);
    while start + per <= Duration::from_secs(secs) {
        let n = uses
            .iter()
            .filter(|u| **u >= start && **u < start + per)
            .count();
        most = most.max(n);
        fewest = fewest.min(n);
        start += Duration::from_millis(250);
    }
    (most, fewest)
}

#[test]
fn a_rate_holds_within_its_bound_in_every_window_and_is_shared_fairly() {
    let per = Duration::from_secs(60);
    let (uses, per_shard) = run_rate(600, per, 200, 7);
    let (most, fewest) = window_extremes(&uses, per, 200);
    // The bound: N + B + N*L/P = 600 + 3 + 3.
    assert!(most <= 606, "{most} in one window");
    assert!(fewest >= 594, "only {fewest} in one window");
    let share = f64::from(per_shard[0]) / f64::from(per_shard[0] + per_shard[1]);
    assert!((0.45..=0.55).contains(&share), "{per_shard:?}");
}

#[test]
fn a_small_rate_overshoots_by_at_most_one() {
    let per = Duration::from_secs(10);
    let (uses, _) = run_rate(5, per, 60, 11);
    let (most, fewest) = window_extremes(&uses, per, 60);
    assert!(most <= 6, "{most} in one window");
    assert!(fewest >= 4, "only {fewest} in one window");
}

#[test]
fn a_waiting_token_request_is_due_when_a_token_accrues() {
    let t0 = Instant::now();
    let rate = Rate {
        count: 10,
        per: Duration::from_secs(1),
    };
    let key = RateKey {
        kind: RateKind::Connections,
        scope: ThrottleScope::Domain(d("x.test")),
    };
    let mut l: Ledger<u32> = Ledger::new(1);
    assert_eq!(l.ask_tokens(&key, 0, 5, rate, 1, t0).len(), 1, "room for 1");
    assert!(l.ask_tokens(&key, 0, 5, rate, 2, t0).is_empty());
    let due = l.next_due(t0).expect("due");
    assert!(
        due >= t0 + Duration::from_millis(99) && due <= t0 + Duration::from_millis(101),
        "{:?}",
        due - t0
    );
    assert!(l.tick(t0 + Duration::from_millis(50)).0.is_empty());
    let (out, _) = l.tick(t0 + Duration::from_millis(101));
    assert!(
        matches!(out[..], [(2, Grant::Tokens { count: 1, .. })]),
        "{out:?}"
    );
}

#[test]
fn a_lowered_limit_brings_the_holders_down_to_it_together() {
    let t0 = Instant::now();
    let mut l: Ledger<u32> = Ledger::new(3);
    let x = d("x.test");
    assert_eq!(slots(&l.ask_slots(&x, 0, 2, 4, 1, t0)), [(1, 2)]);
    assert_eq!(slots(&l.ask_slots(&x, 2, 2, 4, 2, t0)), [(2, 2)]);
    // The limit drops to 1 (a reload, a back-off): the shares add up to 1,
    // not 1 each.
    let lowered = |holding| SyncItem {
        domain: x.clone(),
        returned: 0,
        holding,
        limit: 1,
    };
    let (a, _) = l.sync(0, &[lowered(2)], t0);
    let (b, _) = l.sync(2, &[lowered(2)], t0);
    assert_eq!((a[0].1, b[0].1), (1, 0));
    // Limit 3 over the two: 2 and 1.
    let at3 = |holding| SyncItem {
        limit: 3,
        ..lowered(holding)
    };
    let (a, _) = l.sync(0, &[at3(2)], t0);
    let (b, _) = l.sync(2, &[at3(2)], t0);
    assert_eq!(a[0].1 + b[0].1, 3);
}
