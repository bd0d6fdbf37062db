//! The segment scanner on arbitrary segment images: no panic, and a scan
//! that accounts for every byte: header, frames and skipped corrupt regions
//! in order without overlap, then a torn tail or padding.

#![no_main]

use impulse::spool::record::{check_frame, SEGMENT_HEADER_LEN};
use impulse::spool::scan::scan_segment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|buf: &[u8]| {
    let scan = scan_segment(buf);
    let len = buf.len() as u64;
    assert!(scan.valid_end <= len);
    assert_eq!(scan.valid_end + scan.torn_bytes + scan.padding_bytes, len);
    let mut at = SEGMENT_HEADER_LEN as u64;
    let mut corrupt = scan.corrupt.iter().peekable();
    for f in &scan.frames {
        if let Some(&&(start, end)) = corrupt.peek() {
            if start == at {
                assert!(end > start && end <= f.offset);
                at = end;
                corrupt.next();
            }
        }
        assert_eq!(f.offset, at, "frames and corrupt regions tile the segment");
        let found = check_frame(&buf[f.offset as usize..], f.offset).expect("a found frame checks");
        assert_eq!(found, f.frame);
        at += f.frame.len as u64;
    }
    assert!(
        corrupt.next().is_none(),
        "every corrupt region is followed by a frame"
    );
    assert_eq!(
        scan.valid_end,
        at.min(len),
        "the tail starts after the last frame"
    );
});
