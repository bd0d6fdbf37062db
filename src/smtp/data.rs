//! Message content decoding: the DATA decoder (RFC 5321 §4.1.1.4, §4.5.2)
//! and the BDAT chunk accumulator (RFC 3030).
//!
//! Owns end-of-data detection, dot-unstuffing, and the content checks (size,
//! line length, bare CR/LF, NUL, 8-bit). Only `CRLF . CRLF` ends DATA: a
//! bare CR or LF never starts a line, so `\n.\n` and friends cannot smuggle
//! a second message. No I/O here: bytes in, counts and flags out.
//! May call: `smtp::budget` (the `Charge` a body holds).

use super::budget::Charge;

/// What was wrong with a message's content, found while reading it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentFlags {
    /// Unstuffed size went over the limit (storing stopped).
    pub oversize: bool,
    /// A CR not followed by LF, or an LF not preceded by CR (DATA only).
    pub bare_cr_lf: bool,
    /// A NUL octet (DATA only).
    pub nul: bool,
    /// A line longer than the data line limit (DATA only).
    pub line_too_long: bool,
    /// An octet above 127.
    pub eight_bit: bool,
    /// The shard's content budget could not hold the body (storing stopped).
    pub no_memory: bool,
}

impl ContentFlags {
    /// True when the message must be refused whatever the rest says.
    pub fn rejects(&self) -> bool {
        self.oversize || self.bare_cr_lf || self.nul || self.line_too_long || self.no_memory
    }
}

/// Collects a body under a size limit: stops storing (but keeps counting)
/// once the limit is passed or the content is already doomed. With a
/// `Charge`, the buffer's capacity is charged to the shard's budget before
/// it grows; when the budget refuses, the body is dropped (`no_memory`).
#[derive(Debug, Default)]
pub struct Body {
    /// The content so far.
    pub bytes: Vec<u8>,
    /// Octets counted, stored or not.
    pub len: u64,
    /// Limit in octets, 0 = none.
    pub max_octets: u64,
    /// Problems found.
    pub flags: ContentFlags,
    /// What `bytes` holds against the shard's budget (`None` = unbudgeted).
    pub charge: Option<Charge>,
}

impl Body {
    /// An empty body with a size limit (0 = unlimited).
    pub fn new(max_octets: u64) -> Self {
        Body {
            max_octets,
            ..Body::default()
        }
    }

    /// Appends content octets.
    pub fn push(&mut self, chunk: &[u8]) {
        if !self.flags.eight_bit && !chunk.is_ascii() {
            self.flags.eight_bit = true;
        }
        self.len = self.len.saturating_add(chunk.len() as u64);
        if self.max_octets != 0 && self.len > self.max_octets {
            self.flags.oversize = true;
        }
        if !self.flags.rejects() && !self.reserve(chunk.len()) {
            self.flags.no_memory = true;
        }
        if self.flags.rejects() {
            // Doomed: free what we hold and store nothing more.
            self.bytes = Vec::new();
            if let Some(charge) = self.charge.as_mut() {
                charge.release();
            }
        } else {
            self.bytes.extend_from_slice(chunk);
        }
    }

    /// Makes room for `more` octets if that needs no reallocation later
    /// and the budget has it; a refusal is no shortage (nothing is asked
    /// of the budget that it would have to refuse).
    fn reserve_hint(&mut self, more: usize) {
        if self.flags.rejects() {
            return;
        }
        let mut more = more;
        if self.max_octets != 0 {
            let left = self.max_octets.saturating_sub(self.len).saturating_add(1);
            more = more.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        let need = self.bytes.len().saturating_add(more);
        if need <= self.bytes.capacity() {
            return;
        }
        let Some(charge) = self.charge.as_mut() else {
            self.bytes.reserve(more);
            return;
        };
        // Doubling keeps a body read in many pieces from being copied at
        // every piece; exactly what is needed when doubling does not fit.
        let doubled = need.max(self.bytes.capacity().saturating_mul(2));
        let fits = |c: &mut Charge, t: usize| c.could_grow_to(t as u64) && c.try_grow_to(t as u64);
        if let Some(t) = [doubled, need].into_iter().find(|&t| fits(charge, t)) {
            self.bytes.reserve_exact(t - self.bytes.len());
        }
    }

    /// Makes room for `more` octets, charging the new capacity first:
    /// doubling when the budget allows, else exactly what is needed.
    fn reserve(&mut self, more: usize) -> bool {
        let Some(charge) = self.charge.as_mut() else {
            return true;
        };
        let need = self.bytes.len().saturating_add(more);
        if need <= self.bytes.capacity() {
            return true;
        }
        let doubled = need.max(self.bytes.capacity().saturating_mul(2));
        // Doubling is only asked for when it fits: its refusal is no shortage.
        let target = if charge.could_grow_to(doubled as u64) && charge.try_grow_to(doubled as u64) {
            doubled
        } else if charge.try_grow_to(need as u64) {
            need
        } else {
            return false;
        };
        self.bytes.reserve_exact(target - self.bytes.len());
        true
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF).
    LineStart,
    /// Inside a line.
    Mid,
    /// Inside a line, just after a CR.
    Cr,
    /// A `.` at the start of a line.
    Dot,
    /// `.` CR at the start of a line.
    DotCr,
    /// The terminator was seen: nothing more is content.
    Done,
}

/// What one octet adds to the content.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Emit {
    /// Nothing (yet).
    Nothing,
    /// The octet itself.
    Octet,
    /// CR (held back from the octet before) and this LF.
    Crlf,
    /// A held-back CR that turned out bare, then the octet itself.
    BareCrOctet,
    /// A held-back CR that turned out bare; this octet (a CR) is held.
    BareCr,
    /// The end of data.
    End,
}

/// Streaming DATA decoder. Feed it input; it reports how much it consumed
/// and whether the terminating `CRLF.CRLF` was seen (the input after that
/// belongs to the next command). Content octets are copied once, straight
/// from the input into the body, in runs between the octets unstuffing
/// drops.
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    line_octets: usize,
    max_line_octets: usize,
    body: Body,
}

/// Input octets kept for the body and not yet handed to it.
struct Run {
    start: usize,
    end: usize,
}

impl Run {
    /// Adds `input[from..to]`: extends the run if it is contiguous with it,
    /// else hands the run over and starts a new one.
    fn keep(&mut self, body: &mut Body, input: &[u8], from: usize, to: usize) {
        if from != self.end {
            self.flush(body, input);
            self.start = from;
        }
        self.end = to;
    }

    fn flush(&mut self, body: &mut Body, input: &[u8]) {
        if self.end > self.start {
            body.push(&input[self.start..self.end]);
        }
        self.start = self.end;
    }
}

impl DataDecoder {
    /// A decoder for content following the DATA command's CRLF.
    pub fn new(max_octets: u64, max_line_octets: usize) -> Self {
        DataDecoder {
            state: State::LineStart,
            line_octets: 0,
            max_line_octets,
            body: Body::new(max_octets),
        }
    }

    /// The same, charging the body's buffer to a shard budget.
    pub fn charged(max_octets: u64, max_line_octets: usize, charge: Charge) -> Self {
        let mut d = DataDecoder::new(max_octets, max_line_octets);
        d.body.charge = Some(charge);
        d
    }

    /// Consumes input; returns `(octets consumed, finished)`. Once
    /// finished it consumes nothing more.
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        if self.state == State::Done {
            return (0, true);
        }
        // This input holds at most this much content: room for it now
        // rather than growing (a copy) as runs arrive.
        self.body.reserve_hint(input.len());
        let mut run = Run { start: 0, end: 0 };
        let mut i = 0;
        while i < input.len() {
            // Fast path: inside a line, keep up to the next CR, LF or NUL.
            if self.state == State::Mid {
                let rest = &input[i..];
                let n = memchr::memchr3(b'\r', b'\n', 0, rest).unwrap_or(rest.len());
                if n > 0 {
                    self.line_octets += n;
                    if self.line_octets > self.max_line_octets {
                        self.body.flags.line_too_long = true;
                    }
                    run.keep(&mut self.body, input, i, i + n);
                    i += n;
                    continue;
                }
            }
            let (at, b) = (i, input[i]);
            i += 1;
            self.line_octets += 1;
            if self.line_octets > self.max_line_octets {
                self.body.flags.line_too_long = true;
            }
            if b == 0 {
                self.body.flags.nul = true;
            }
            let emit = self.step(b);
            match emit {
                Emit::Nothing => {}
                Emit::Octet => run.keep(&mut self.body, input, at, i),
                // The CR is in this input unless it ended the last one.
                Emit::Crlf if at > 0 => run.keep(&mut self.body, input, at - 1, i),
                Emit::Crlf => {
                    run.flush(&mut self.body, input);
                    self.body.push(b"\r\n");
                    run.start = i;
                    run.end = i;
                }
                Emit::BareCr | Emit::BareCrOctet => {
                    run.flush(&mut self.body, input);
                    self.body.push(b"\r");
                    run.start = at;
                    run.end = if emit == Emit::BareCrOctet { i } else { at };
                }
                Emit::End => {
                    run.flush(&mut self.body, input);
                    // An empty push still drops a body that is doomed now.
                    self.body.push(&[]);
                    return (i, true);
                }
            }
        }
        run.flush(&mut self.body, input);
        self.body.push(&[]);
        (input.len(), false)
    }

    /// One octet through the state machine.
    fn step(&mut self, b: u8) -> Emit {
        match (self.state, b) {
            (State::Done, _) => Emit::End,
            (State::LineStart, b'.') => {
                self.state = State::Dot;
                Emit::Nothing
            }
            (State::Dot, b'\r') => {
                self.state = State::DotCr;
                Emit::Nothing
            }
            (State::DotCr, b'\n') => {
                self.state = State::Done;
                Emit::End
            }
            (State::Cr, b'\n') => {
                self.state = State::LineStart;
                self.line_octets = 0;
                Emit::Crlf
            }
            // ".\r" then not LF (the dot was stuffing), or a CR then not
            // LF: the CR is bare.
            (State::DotCr | State::Cr, _) => {
                self.body.flags.bare_cr_lf = true;
                self.state = State::Mid;
                match self.mid(b) {
                    Emit::Nothing => Emit::BareCr,
                    _ => Emit::BareCrOctet,
                }
            }
            // A stuffed dot (or a dot before something odd) is dropped.
            (State::Dot | State::LineStart | State::Mid, _) => {
                self.state = State::Mid;
                self.mid(b)
            }
        }
    }

    fn mid(&mut self, b: u8) -> Emit {
        match b {
            b'\r' => {
                self.state = State::Cr;
                Emit::Nothing
            }
            b'\n' => {
                // Bare LF: kept, flagged, and it does not start a line.
                self.body.flags.bare_cr_lf = true;
                Emit::Octet
            }
            _ => Emit::Octet,
        }
    }

    /// The decoded body and its flags (call after `feed` reported the end).
    pub fn finish(self) -> Body {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (usize, bool, Body) {
        let mut d = DataDecoder::new(0, 1000);
        let (n, done) = d.feed(input);
        (n, done, d.finish())
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_and_unstuffs() {
        let (n, done, body) = decode(b"..a\r\n.\r\n...\r\nb\r\n.\r\nNEXT");
        assert!(done);
        assert_eq!(n, 8);
        assert_eq!(body.bytes, b".a\r\n");
        let (_, done, body) = decode(b"x\r\n...\r\n.b\r\n.\r\n");
        assert!(done);
        assert_eq!(body.bytes, b"x\r\n..\r\nb\r\n");
        assert_eq!(body.flags, ContentFlags::default());
    }

    #[test]
    fn bare_line_endings_never_end_data() {
        for smuggle in [
            &b"a\n.\nb"[..],
            b"a\r.\nb",
            b"a\n.\r\nb",
            b"a\r\n.\nb",
            b"a\r\n.\rb",
        ] {
            let mut input = smuggle.to_vec();
            input.extend_from_slice(b"\r\n.\r\n");
            let (n, done, body) = decode(&input);
            assert!(done, "{smuggle:?}");
            assert_eq!(n, input.len(), "{smuggle:?}");
            assert!(body.flags.bare_cr_lf, "{smuggle:?}");
        }
    }

    #[test]
    fn flags_nul_long_lines_eight_bit_and_size() {
        let (_, _, b) = decode(b"a\0b\r\n.\r\n");
        assert!(b.flags.nul && b.flags.rejects());
        let mut d = DataDecoder::new(0, 5);
        d.feed(b"abc\r\nabcd\r\n.\r\n");
        assert!(d.finish().flags.line_too_long);
        let mut d = DataDecoder::new(0, 5);
        d.feed(b"abc\r\n.\r\n");
        assert!(!d.finish().flags.line_too_long);
        let (_, _, b) = decode(b"caf\xc3\xa9\r\n.\r\n");
        assert!(b.flags.eight_bit && !b.flags.rejects());
        let mut d = DataDecoder::new(4, 1000);
        assert_eq!(d.feed(b"abc\r\n.\r\n"), (8, true));
        let b = d.finish();
        assert!(b.flags.oversize);
        assert!(b.bytes.is_empty());
        assert_eq!(b.len, 5);
    }

    #[test]
    fn budget_is_charged_as_the_body_grows_and_freed_when_it_cannot() {
        let budget = crate::smtp::budget::ContentBudget::new(100);
        let mut held = budget.charge();
        assert!(held.try_grow_to(40));
        let mut d = DataDecoder::charged(0, 1000, budget.charge());
        assert_eq!(d.feed(b"0123456789\r\n"), (12, false));
        assert!(budget.used_octets() >= 52);
        // 70 more octets do not fit beside the 40 held elsewhere.
        let line = [b'x'; 68];
        d.feed(&line);
        assert_eq!(
            budget.used_octets(),
            40,
            "the failed body gave its octets back"
        );
        assert_eq!(d.feed(b"\r\nmore\r\n.\r\n"), (11, true));
        let b = d.finish();
        assert!(b.flags.no_memory && b.flags.rejects() && b.bytes.is_empty());
        assert_eq!(b.len, 88);
        drop(held);
        let mut d = DataDecoder::charged(0, 1000, budget.charge());
        d.feed(b"ok\r\n.\r\n");
        let b = d.finish();
        assert_eq!(
            (b.bytes.as_slice(), b.flags.no_memory),
            (&b"ok\r\n"[..], false)
        );
        assert!(budget.used_octets() >= 4);
        drop(b);
        assert_eq!(budget.used_octets(), 0);
    }

    #[test]
    fn doubling_that_does_not_fit_is_no_shortage() {
        let budget = crate::smtp::budget::ContentBudget::new(100);
        let mut d = DataDecoder::charged(0, 1000, budget.charge());
        d.feed(&[b'x'; 40]);
        d.feed(&[b'y'; 10]);
        // Capacity 80 -> doubling to 160 does not fit; the 95 needed do.
        d.feed(&[b'z'; 45]);
        assert!(!budget.exhausted());
        assert!(budget.used_octets() <= 100);
        assert_eq!(d.feed(b"\r\n.\r\n"), (5, true));
        assert!(!d.finish().flags.no_memory);
    }

    #[test]
    fn empty_body_and_split_terminator() {
        let (n, done, b) = decode(b".\r\n");
        assert!(done && n == 3 && b.bytes.is_empty());
        let mut d = DataDecoder::new(0, 1000);
        assert_eq!(d.feed(b"x\r\n."), (4, false));
        assert_eq!(d.feed(b"\r"), (1, false));
        assert_eq!(d.feed(b"\nQUIT"), (1, true));
        assert_eq!(d.finish().bytes, b"x\r\n");
    }
}
