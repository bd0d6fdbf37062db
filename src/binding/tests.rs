use std::path::Path;

use super::*;
use crate::config::Config;
use crate::message::Envelope;

fn config(spoolbase: &Path) -> Arc<Config> {
    let text = format!(
        "[global]\nspoolbase = \"{}\"\n\
         regex_binding2 = [\"group:pool = rcptto =~ '@example[.]net$'\"]\n\
         [listener.a]\nlisten = [\"127.0.0.1:1\"]\n\
         [binding.v1]\n[binding.v2]\n\
         [binding_group.pool]\nmembers = {{ v1 = 1, v2 = 1 }}\n",
        spoolbase.display()
    );
    Arc::new(Config::from_str("t.toml", &text, Path::new(".")).expect("valid"))
}

fn whole(binding: &str) -> Suspension {
    Suspension {
        binding: binding.into(),
        domain: None,
    }
}

#[test]
fn a_suspension_holds_mail_steers_groups_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    crate::runtime::on_executor(move || async move {
        let current = Rc::new(Current::new(config(&base)));
        let events = Rc::new(Events::new(0));
        let b = Bindings::standalone(current.clone(), events.clone());
        let v1 = b.id("v1");
        assert!(!b.holds(v1, "example.net"));
        assert_eq!(b.suspend(whole("v1"), true).await, Ok(true));
        assert_eq!(b.suspend(whole("v1"), true).await, Ok(false), "already");
        assert!(b.holds(v1, "example.net"));
        let e = b.suspend(whole("ghost"), true).await.unwrap_err();
        assert!(e.contains("no binding"), "{e}");
        // The group sends all of its new mail from the other member.
        let env = Envelope::new("a@example.com", &["b@example.net"]);
        for _ in 0..3 * PICK_BATCH {
            let got = b.assign(&MessageFields::new(&env, b"", None, None)).await;
            assert_eq!(got.as_deref(), Some("v2"));
        }
        // One domain from a binding.
        let one = Suspension {
            binding: "v2".into(),
            domain: Some("slow.test".into()),
        };
        assert_eq!(b.suspend(one.clone(), true).await, Ok(true));
        let v2 = b.id("v2");
        assert!(b.holds(v2, "slow.test") && !b.holds(v2, "example.net"));
        // A restart reads the file: both are still in force.
        let kept = suspend::load(&base).expect("file");
        assert_eq!(
            kept.iter().cloned().collect::<Vec<_>>(),
            vec![whole("v1"), one]
        );
        assert_eq!(b.suspend(whole("v1"), false).await, Ok(true));
        assert!(!suspend::load(&base).unwrap().binding("v1"));
    });
}

#[test]
fn policy_assigns_by_name_and_an_unknown_name_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    crate::runtime::on_executor(move || async move {
        let current = Rc::new(Current::new(config(&base)));
        let b = Bindings::standalone(current, Rc::new(Events::new(0)));
        let mut env = Envelope::new("a@example.com", &["b@other.test"]);
        assert_eq!(
            b.assign(&MessageFields::new(&env, b"", None, None)).await,
            None
        );
        b.set_binding(&mut env, "v2").unwrap();
        assert_eq!(env.binding.as_deref(), Some("v2"));
        assert!(b.set_binding(&mut env, "ghost").is_err());
        assert_eq!(env.binding.as_deref(), Some("v2"), "unchanged");
        assert!(b.set_binding_group(&mut env, "ghost").await.is_err());
        assert_eq!(env.binding.as_deref(), Some("v2"), "unchanged");
        b.set_binding_group(&mut env, "pool").await.unwrap();
        assert!(matches!(env.binding.as_deref(), Some("v1" | "v2")));
        b.set_binding(&mut env, "default").unwrap();
        assert_eq!(env.binding, None, "default is no binding");
    });
}

#[test]
fn a_batch_of_picks_grows_while_used_up_fast_and_shrinks_when_slow() {
    crate::runtime::on_executor(|| async {
        let mut b = Batch::default();
        // The first ask is for the smallest batch.
        assert_eq!(b.next(), Some(PICK_BATCH));
        assert_eq!(b.next(), None, "one ask at a time");
        b.asking = false;
        b.picks = std::iter::repeat_n(Arc::from("v1"), PICK_BATCH as usize).collect();
        assert_eq!(b.next(), None, "most of the batch is left");
        // Used up at once: the next batches double, up to the largest.
        let mut sizes = Vec::new();
        for _ in 0..6 {
            b.picks.clear();
            b.asking = false;
            sizes.push(b.next().expect("asks"));
        }
        assert_eq!(sizes, [128, 256, 512, 1024, 1024, 1024]);
        // A batch that lasted long: the next is half as large.
        b.asking = false;
        b.asked = Some(sched::now() - PICK_SLOW - Duration::from_millis(1));
        assert_eq!(b.next(), Some(512));
    });
}
