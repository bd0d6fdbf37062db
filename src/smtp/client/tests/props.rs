//! Property tests: how the server's bytes are split across reads never
//! changes what the client does, and no input panics or grows memory
//! past the reply limits.

use proptest::prelude::*;

use super::*;

/// Codes a server might answer with at any point.
const CODES: [u16; 12] = [220, 221, 250, 251, 354, 421, 450, 451, 452, 503, 550, 554];

/// Everything a run produced, independent of read boundaries.
#[derive(Debug, PartialEq)]
struct Run {
    output: Vec<u8>,
    events: Vec<ClientStep>,
    submitted: bool,
    last: ClientStep,
}

/// Feeds `input` cut at `cuts` (offsets taken modulo the length).
fn feed_cut(s: &mut ClientSession, input: &[u8], cuts: &[usize], run: &mut Run) {
    let mut offsets: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    offsets.push(input.len());
    offsets.sort_unstable();
    let mut start = 0;
    for end in offsets {
        s.feed(&input[start..end]);
        start = end;
        run.output.extend(s.take_output());
        while let step @ (ClientStep::Done(_) | ClientStep::Failed(_)) = s.poll() {
            run.events.push(step);
        }
    }
}

/// Greeting and EHLO, a transaction, QUIT; the server's replies to each
/// phase given whole and fed cut at `cuts`.
fn run(settings: &ClientSettings, phases: &[Vec<u8>; 3], cuts: &[usize]) -> Run {
    let mut s = ClientSession::new(settings.clone(), false);
    let mut run = Run {
        output: Vec::new(),
        events: Vec::new(),
        submitted: false,
        last: ClientStep::NeedInput,
    };
    feed_cut(&mut s, &phases[0], cuts, &mut run);
    run.submitted = s
        .submit(tx(
            &["b@y.example", "c@y.example", "d@y.example"],
            ".x\nbody\n",
        ))
        .is_ok();
    feed_cut(&mut s, &phases[1], cuts, &mut run);
    s.quit();
    feed_cut(&mut s, &phases[2], cuts, &mut run);
    run.output.extend(s.take_output());
    run.last = s.poll();
    run
}

fn reply_strategy() -> impl Strategy<Value = String> {
    (0..CODES.len(), 1..4usize, any::<bool>()).prop_map(|(i, lines, enhanced)| {
        let code = CODES[i];
        let text = if enhanced {
            format!("{}.1.0 text", code / 100)
        } else {
            "text".to_string()
        };
        let mut reply = String::new();
        for l in 1..lines {
            reply.push_str(&format!("{code}-line {l}\r\n"));
        }
        reply.push_str(&format!("{code} {text}\r\n"));
        reply
    })
}

fn ehlo_strategy() -> impl Strategy<Value = String> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(pipelining, chunking, dsn)| {
        let mut ehlo = "250-mx.example\r\n".to_string();
        for (on, word) in [
            (pipelining, "PIPELINING"),
            (chunking, "CHUNKING"),
            (dsn, "DSN"),
        ] {
            if on {
                ehlo.push_str(&format!("250-{word}\r\n"));
            }
        }
        ehlo.push_str("250 SIZE 100\r\n");
        ehlo
    })
}

proptest! {
    #[test]
    fn read_boundaries_do_not_matter(
        ehlo in ehlo_strategy(),
        mostly_ok in proptest::collection::vec(any::<bool>(), 6),
        replies in proptest::collection::vec(reply_strategy(), 6),
        chunk in 1..8usize,
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let settings = ClientSettings {
            use_chunking: true,
            bdat_chunk_octets: chunk,
            ..settings()
        };
        // Half the time a reply is a plausible success for its position.
        let ok = ["250 ok\r\n", "250 ok\r\n", "250 ok\r\n", "250 ok\r\n", "354 go\r\n", "250 ok\r\n"];
        let tx_replies: String = replies
            .iter()
            .zip(mostly_ok)
            .zip(ok)
            .map(|((r, ok_here), good)| if ok_here { good.to_string() } else { r.clone() })
            .collect();
        let phases = [
            format!("220 mx.example\r\n{ehlo}").into_bytes(),
            tx_replies.into_bytes(),
            b"250 ok\r\n221 bye\r\n".to_vec(),
        ];
        let whole = run(&settings, &phases, &[]);
        let split = run(&settings, &phases, &cuts);
        prop_assert_eq!(&whole, &split);
        let every_byte: Vec<usize> = (0..64).collect();
        prop_assert_eq!(&whole, &run(&settings, &phases, &every_byte));
    }

    #[test]
    fn arbitrary_input_never_panics_and_stays_bounded(
        tokens in proptest::collection::vec(token_strategy(), 0..40),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        start_in_transaction in any::<bool>(),
        pipelining in any::<bool>(),
    ) {
        let input: Vec<u8> = tokens.concat();
        let settings = ClientSettings { use_pipelining: pipelining, tls: TlsPolicy::Opportunistic, ..settings() };
        let mut s = ClientSession::new(settings, false);
        if start_in_transaction {
            s.feed(&wire(BANNER));
            s.feed(&wire(EHLO_FULL));
            prop_assert!(s.submit(tx(&["b@y.example", "c@y.example"], "hi\n")).is_ok());
        }
        let mut run = Run { output: Vec::new(), events: Vec::new(), submitted: false, last: ClientStep::NeedInput };
        let mut offsets: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        offsets.push(input.len());
        offsets.sort_unstable();
        let mut start = 0;
        for end in offsets {
            s.feed(&input[start..end]);
            start = end;
            // A reply in progress never holds more than its limits allow
            // (lossy UTF-8 may triple an octet; buffers may round up).
            let bound = (MAX_REPLY_LINES + 1) * (3 * MAX_REPLY_LINE_OCTETS + 64) + 4096;
            prop_assert!(s.buffered_input_octets() <= bound);
            run.output.extend(s.take_output());
            prop_assert!(run.output.len() < 4096);
            while let step @ (ClientStep::Done(_) | ClientStep::Failed(_)) = s.poll() {
                run.events.push(step);
            }
        }
        prop_assert!(run.events.len() <= 4);
        s.timeout();
        s.connection_closed();
        let mut steps = Vec::new();
        drain(&mut s, &mut steps);
        prop_assert!(steps.len() <= 3);
        prop_assert_eq!(steps.last(), Some(&ClientStep::Closed));
    }
}

/// Reply-shaped lines, broken lines and raw bytes.
fn token_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            100u16..700,
            prop_oneof![Just(" "), Just("-"), Just(""), Just("x")],
            "[ -~]{0,20}"
        )
            .prop_map(|(code, sep, text)| format!("{code}{sep}{text}\r\n").into_bytes()),
        reply_strategy().prop_map(String::into_bytes),
        Just(b"\r\n".to_vec()),
        Just(b"250-STARTTLS\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(Just(b'2'), 0..3000),
    ]
}
