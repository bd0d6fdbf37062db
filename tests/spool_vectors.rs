//! Decodes the binary vectors in spool-format/vectors/ (built by gen.py from
//! SPEC.md, not by this code) and compares with the expected text.

use impulse::spool::record::{decode_payload, FRAME_HEADER_LEN};
use impulse::spool::scan::scan_segment;
use impulse::spool::tools::{describe_header, describe_record};
use std::path::Path;

fn render(buf: &[u8]) -> String {
    let scan = scan_segment(buf);
    let mut lines = Vec::new();
    if let Some(h) = &scan.header {
        lines.push(describe_header(h));
    }
    let mut corrupt = scan.corrupt.iter().peekable();
    for f in &scan.frames {
        while let Some((s, e)) = corrupt.next_if(|(s, _)| *s < f.offset) {
            lines.push(format!("corrupt @{s}..{e}"));
        }
        let o = f.offset as usize;
        let rec = decode_payload(
            f.frame.record_type,
            f.frame.version,
            &buf[o + FRAME_HEADER_LEN..o + f.frame.len],
        )
        .expect("vector record decodes");
        lines.push(format!("@{o} {}", describe_record(&rec)));
    }
    lines.push(format!("torn_bytes {}", scan.torn_bytes));
    lines.join("\n") + "\n"
}

#[test]
fn vectors_decode_as_documented() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("spool-format/vectors");
    let mut n = 0;
    // v1: frames of payload version 1, written before bindings, still read.
    for name in ["basic", "torn-tail", "corrupt-middle", "v1"] {
        let seg = std::fs::read(dir.join(format!("{name}.seg"))).unwrap();
        let want = std::fs::read_to_string(dir.join(format!("{name}.txt"))).unwrap();
        assert_eq!(render(&seg), want, "vector {name}");
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn encoder_reproduces_basic_vector() {
    // Re-encode what we decoded: the bytes must match gen.py's exactly.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("spool-format/vectors");
    let seg = std::fs::read(dir.join("basic.seg")).unwrap();
    let scan = scan_segment(&seg);
    let mut out = scan.header.unwrap().encode().to_vec();
    for f in &scan.frames {
        let o = f.offset as usize;
        let rec = decode_payload(
            f.frame.record_type,
            f.frame.version,
            &seg[o + FRAME_HEADER_LEN..o + f.frame.len],
        )
        .unwrap();
        let at = out.len() as u64;
        impulse::spool::record::encode_record(&rec, at, &mut out);
    }
    assert_eq!(out, seg);
}
