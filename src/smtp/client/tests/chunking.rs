//! Scripted CHUNKING transactions: BDAT in one chunk or several,
//! pipelined or lock-step, refused chunks, BINARYMIME.

use super::*;

const EHLO_CHUNKING: &str = "250-mx.example\n250-PIPELINING\n250-CHUNKING\n250 BINARYMIME\n";

fn chunking(chunk: usize, pipelining: bool) -> ClientSettings {
    ClientSettings {
        use_chunking: true,
        use_pipelining: pipelining,
        bdat_chunk_octets: chunk,
        ..settings()
    }
}

#[test]
fn bdat_single_chunk() {
    let mut s = connected(chunking(DEFAULT_BDAT_CHUNK_OCTETS, true), EHLO_CHUNKING);
    s.submit(tx(&["b@y.example"], ".dots stay\n")).unwrap();
    let steps = converse(
        &mut s,
        &[
            (
                "MAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\n",
                "250 ok\n250 ok\n",
            ),
            ("BDAT 12 LAST\n.dots stay\n", "250 2.0.0 ok\n"),
        ],
    );
    assert_eq!(
        outcomes(done(&steps)),
        ["b@y.example delivered 250 2.0.0 ok"]
    );
    assert_eq!(steps.last(), Some(&ClientStep::Ready));
}

#[test]
fn bdat_chunks_pipelined_and_lock_step() {
    let mut s = connected(chunking(4, true), EHLO_CHUNKING);
    s.submit(tx(&["b@y.example"], "hello\n")).unwrap();
    let steps = converse(
        &mut s,
        &[
            (
                "MAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\n",
                "250 ok\n250 ok\n",
            ),
            ("BDAT 4\nhellBDAT 3 LAST\no\n", "250 ok\n250 done\n"),
        ],
    );
    assert_eq!(outcomes(done(&steps)), ["b@y.example delivered 250 done"]);

    let mut s = connected(chunking(4, false), EHLO_CHUNKING);
    s.submit(tx(&["b@y.example"], "hello\n")).unwrap();
    let steps = converse(
        &mut s,
        &[
            ("MAIL FROM:<a@x.example>\n", "250 ok\n"),
            ("RCPT TO:<b@y.example>\n", "250 ok\n"),
            ("BDAT 4\nhell", "250 ok\n"),
            ("BDAT 3 LAST\no\n", "250 done\n"),
        ],
    );
    assert_eq!(outcomes(done(&steps)), ["b@y.example delivered 250 done"]);
}

#[test]
fn bdat_chunk_refused() {
    let mut s = connected(chunking(4, true), EHLO_CHUNKING);
    s.submit(tx(&["b@y.example"], "hello\n")).unwrap();
    let steps = converse(
        &mut s,
        &[
            (
                "MAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\n",
                "250 ok\n250 ok\n",
            ),
            (
                "BDAT 4\nhellBDAT 3 LAST\no\n",
                "452 4.3.1 full\n503 5.5.1 no\n",
            ),
            ("RSET\n", "250 ok\n"),
        ],
    );
    assert_eq!(steps, [ClientStep::Ready]);

    let mut s = connected(chunking(4, false), EHLO_CHUNKING);
    s.submit(tx(&["b@y.example"], "hello\n")).unwrap();
    let steps = converse(
        &mut s,
        &[
            ("MAIL FROM:<a@x.example>\n", "250 ok\n"),
            ("RCPT TO:<b@y.example>\n", "250 ok\n"),
            ("BDAT 4\nhell", "552 5.3.4 too big\n"),
        ],
    );
    assert_eq!(
        outcomes(done(&steps)),
        ["b@y.example permanent 552 5.3.4 too big"]
    );
    assert_output(&mut s, "RSET\n");
}

#[test]
fn binarymime_needs_chunking() {
    let mut t = tx_bytes(&["b@y.example"], b"\x00\xff");
    t.body_type = BodyType::BinaryMime;
    let mut s = connected(chunking(100, true), EHLO_CHUNKING);
    s.submit(t.clone()).unwrap();
    converse(
        &mut s,
        &[(
            "MAIL FROM:<a@x.example> BODY=BINARYMIME\nRCPT TO:<b@y.example>\n",
            "250 ok\n250 ok\n",
        )],
    );
    assert_eq!(s.take_output(), b"BDAT 2 LAST\r\n\x00\xff");
    let mut s = connected(settings(), EHLO_CHUNKING);
    s.submit(t).unwrap();
    let mut steps = Vec::new();
    drain(&mut s, &mut steps);
    assert_eq!(done(&steps).recipients[0].outcome.reply().code, 554);
}
