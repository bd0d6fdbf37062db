//! Crash test: a child process appends under load and reports every
//! acknowledged append on stdout; the parent kills it with SIGKILL at a
//! random moment, reopens the spool and checks that every acknowledged
//! MESSAGE is live and every acknowledged DONE took effect.

use impulse::message::{Envelope, MessageId};
use impulse::spool::{Spool, SpoolOptions};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "IMPULSE_SPOOL_CRASH_CHILD_DIR";
const APPENDERS: usize = 50;
const ROUNDS: u32 = 3;

fn env() -> Envelope {
    Envelope {
        helo: "h".into(),
        received_at_ms: 1,
        ..Envelope::new("s@example.org", &["r@example.net"])
    }
}

/// Child mode: only does something when the parent sets `CHILD_ENV`.
#[test]
#[ignore = "child process of kill_9_under_load_loses_nothing_acknowledged"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    glommio::LocalExecutor::default().run(async move {
        let opts = SpoolOptions {
            segment_size: 256 * 1024,
            ..SpoolOptions::default()
        };
        let (spool, _) = Spool::open(dir.as_ref(), 2, opts).await.expect("open");
        let mut tasks = Vec::new();
        for t in 0..APPENDERS {
            let s = spool.clone();
            tasks.push(glommio::spawn_local(async move {
                let body = vec![b'q'; 1000 + t * 37];
                for n in 0u64.. {
                    let id = s.allocate_id();
                    s.append_message(id, &env(), &body).await.expect("append");
                    println!("ACK {id}");
                    if n % 5 == 0 {
                        // Once DONE is issued the message may be gone even
                        // if the DONE is never acknowledged.
                        println!("DONE-ISSUED {id}");
                        s.append_done(id).await.expect("done");
                        println!("DONE {id}");
                    }
                    std::io::stdout().flush().expect("flush");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn kill_9_under_load_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashSet<MessageId> = HashSet::new();
    let mut done: HashSet<MessageId> = HashSet::new();
    let mut done_issued: HashSet<MessageId> = HashSet::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "crash_child", "--nocapture"])
            .env(CHILD_ENV, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
            }
            lines
        });
        // Vary the kill moment between rounds.
        std::thread::sleep(Duration::from_millis(300 + 170 * u64::from(round)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            if let Some(id) = line.strip_prefix("ACK ") {
                acked.insert(id.parse().unwrap());
            } else if let Some(id) = line.strip_prefix("DONE-ISSUED ") {
                done_issued.insert(id.parse().unwrap());
            } else if let Some(id) = line.strip_prefix("DONE ") {
                done.insert(id.parse().unwrap());
            }
        }
        let dir = tmp.path().to_path_buf();
        let started = Instant::now();
        let rec = glommio::LocalExecutor::default().run(async move {
            let (s, rec) = Spool::open(&dir, 2, SpoolOptions::default()).await.unwrap();
            s.close().await.unwrap();
            rec
        });
        let live: HashSet<MessageId> = rec.messages.iter().map(|m| m.id).collect();
        let lost: Vec<_> = acked
            .difference(&done_issued)
            .filter(|id| !live.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: lost {} acknowledged",
            lost.len()
        );
        let revived: Vec<_> = done.intersection(&live).collect();
        assert!(
            revived.is_empty(),
            "round {round}: DONE undone for {revived:?}"
        );
        assert_eq!(rec.stats.corrupt_records, 0);
        eprintln!(
            "round {round}: {} acked, {} done, {} live, torn {} B, recovery {:?}",
            acked.len(),
            done.len(),
            live.len(),
            rec.stats.torn_bytes,
            started.elapsed()
        );
    }
    assert!(
        acked.len() > 100,
        "the child made progress: {}",
        acked.len()
    );
}
