//! Spool record codec: segment headers, record frames and payloads.
//!
//! Owns the byte layout described in `spool-format/SPEC.md`. Pure: no I/O,
//! no clock, no logging. Everything that reads or writes spool bytes
//! (writer, recovery, offline tools) goes through this file, and decoding
//! never panics on any input. May call: `message` (the envelope types).

use crate::message::{BodyType, DsnRet, Envelope, MessageId, Notify, Recipient};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"IMPSPOOL";
/// Segment file format version written by this code.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the segment file header in bytes.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Length of a record frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 16;
/// Payload version written by this code for every record type (2: the
/// MESSAGE envelope ends with the binding). Versions 1 to this one are read.
pub const RECORD_VERSION: u8 = 2;
/// Largest payload a frame may carry (the length field is checked against it
/// before anything else, so garbage lengths are rejected cheaply).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 30;

/// Record type tags (frame byte 4).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// A new message: id, envelope, body.
    Message = 1,
    /// Outcome of one delivery attempt for one recipient.
    RecipientOutcome = 2,
    /// Next attempt time and attempt count.
    Retry = 3,
    /// The message needs nothing more; its records may be dropped.
    Done = 4,
    /// The message is sent from another binding from now on.
    Rebind = 5,
}

impl RecordType {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => RecordType::Message,
            2 => RecordType::RecipientOutcome,
            3 => RecordType::Retry,
            4 => RecordType::Done,
            5 => RecordType::Rebind,
            _ => return None,
        })
    }
}

/// What happened to one recipient.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the next hop: nothing more to do for this recipient.
    Delivered,
    /// Permanently failed: nothing more to do (a DSN may follow).
    Failed,
    /// Temporarily failed: still pending.
    Deferred,
}

impl Outcome {
    fn to_u8(self) -> u8 {
        match self {
            Outcome::Delivered => 1,
            Outcome::Failed => 2,
            Outcome::Deferred => 3,
        }
    }
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Outcome::Delivered,
            2 => Outcome::Failed,
            3 => Outcome::Deferred,
            _ => return None,
        })
    }
    /// True when the recipient needs no further delivery attempt.
    pub fn is_final(self) -> bool {
        !matches!(self, Outcome::Deferred)
    }
}

/// A decoded record payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// MESSAGE record.
    Message {
        /// Message id.
        id: MessageId,
        /// Envelope with DSN parameters.
        envelope: Envelope,
        /// Message content as received (after dot-unstuffing).
        body: Vec<u8>,
    },
    /// RECIPIENT_OUTCOME record.
    Outcome {
        /// Message id.
        id: MessageId,
        /// Index into the envelope's recipient list.
        rcpt: u32,
        /// What happened.
        outcome: Outcome,
        /// Reply text from the remote (or local reason).
        reply: String,
    },
    /// RETRY record.
    Retry {
        /// Message id.
        id: MessageId,
        /// Next attempt, milliseconds since the Unix epoch.
        next_attempt_ms: u64,
        /// Attempts made so far.
        attempts: u32,
    },
    /// DONE record.
    Done {
        /// Message id.
        id: MessageId,
    },
    /// REBIND record.
    Rebind {
        /// Message id.
        id: MessageId,
        /// The binding it is sent from now (`None`: `default`).
        binding: Option<String>,
    },
}

impl Record {
    /// The id this record is about.
    pub fn id(&self) -> MessageId {
        match self {
            Record::Message { id, .. }
            | Record::Outcome { id, .. }
            | Record::Retry { id, .. }
            | Record::Done { id }
            | Record::Rebind { id, .. } => *id,
        }
    }
    /// The frame type tag of this record.
    pub fn record_type(&self) -> RecordType {
        match self {
            Record::Message { .. } => RecordType::Message,
            Record::Outcome { .. } => RecordType::RecipientOutcome,
            Record::Retry { .. } => RecordType::Retry,
            Record::Done { .. } => RecordType::Done,
            Record::Rebind { .. } => RecordType::Rebind,
        }
    }
}

/// Segment file header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version of the file.
    pub version: u16,
    /// Owning shard.
    pub shard: u16,
    /// Segment number (also in the file name).
    pub segment: u32,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    #[error("truncated")]
    Truncated,
    /// Bad magic number.
    #[error("bad magic")]
    BadMagic,
    /// Version newer than this code understands.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u16),
    /// Checksum mismatch.
    #[error("checksum mismatch")]
    BadChecksum,
    /// A field holds an impossible value.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

impl SegmentHeader {
    /// Encodes the 32-byte header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[0..8].copy_from_slice(&SEGMENT_MAGIC);
        h[8..10].copy_from_slice(&self.version.to_le_bytes());
        h[10..12].copy_from_slice(&self.shard.to_le_bytes());
        h[12..16].copy_from_slice(&self.segment.to_le_bytes());
        h[16..24].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks a segment header from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let h = buf
            .get(..SEGMENT_HEADER_LEN)
            .ok_or(DecodeError::Truncated)?;
        if h[0..8] != SEGMENT_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if crc32c::crc32c(&h[0..28]) != le_u32(&h[28..32]) {
            return Err(DecodeError::BadChecksum);
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        Ok(SegmentHeader {
            version,
            shard: u16::from_le_bytes([h[10], h[11]]),
            segment: le_u32(&h[12..16]),
            created_ms: le_u64(&h[16..24]),
        })
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Appends one framed record to `out`. The frame's offset check and CRC are
/// computed for `file_offset`; [`reframe`] can move it to another offset.
/// Returns the frame length.
pub fn encode_record(rec: &Record, file_offset: u64, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    encode_payload(rec, out);
    let payload_len = out.len() - start - FRAME_HEADER_LEN;
    let frame = &mut out[start..];
    frame[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    frame[4] = rec.record_type() as u8;
    frame[5] = RECORD_VERSION;
    reframe(frame, file_offset);
    frame.len()
}

/// Rewrites the offset check and CRC of the single frame in `frame` so that
/// it is valid at `file_offset`.
pub fn reframe(frame: &mut [u8], file_offset: u64) {
    frame[8..12].copy_from_slice(&(file_offset as u32).to_le_bytes());
    let crc = frame_crc(&frame[0..12], &frame[FRAME_HEADER_LEN..]);
    frame[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn frame_crc(header12: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header12), payload)
}

/// A frame found at some offset: its type, version, and payload bounds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Record type.
    pub record_type: RecordType,
    /// Payload version (1 to [`RECORD_VERSION`]).
    pub version: u8,
    /// Total length (header + payload).
    pub len: usize,
}

/// Checks the frame starting at `buf[0]`, which sits at `file_offset` in its
/// segment. Cheap checks (length, type, version, reserved, offset) come
/// before the CRC so that scanning garbage costs little.
pub fn check_frame(buf: &[u8], file_offset: u64) -> Result<Frame, DecodeError> {
    let h = buf.get(..FRAME_HEADER_LEN).ok_or(DecodeError::Truncated)?;
    let payload_len = le_u32(&h[0..4]) as usize;
    if payload_len > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::Invalid("length"));
    }
    let record_type = RecordType::from_u8(h[4]).ok_or(DecodeError::Invalid("type"))?;
    if h[5] == 0 || h[5] > RECORD_VERSION {
        return Err(DecodeError::UnsupportedVersion(u16::from(h[5])));
    }
    if h[6] != 0 || h[7] != 0 {
        return Err(DecodeError::Invalid("reserved"));
    }
    if le_u32(&h[8..12]) != file_offset as u32 {
        return Err(DecodeError::Invalid("offset check"));
    }
    let len = FRAME_HEADER_LEN + payload_len;
    let payload = buf
        .get(FRAME_HEADER_LEN..len)
        .ok_or(DecodeError::Truncated)?;
    if frame_crc(&h[0..12], payload) != le_u32(&h[12..16]) {
        return Err(DecodeError::BadChecksum);
    }
    Ok(Frame {
        record_type,
        version: h[5],
        len,
    })
}

/// Checks and decodes the frame at `buf[0]` (at `file_offset`).
pub fn decode_record(buf: &[u8], file_offset: u64) -> Result<(Record, usize), DecodeError> {
    let frame = check_frame(buf, file_offset)?;
    let payload = &buf[FRAME_HEADER_LEN..frame.len];
    let rec = decode_payload(frame.record_type, frame.version, payload)?;
    Ok((rec, frame.len))
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_opt_str(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_bytes(out, s.as_bytes());
        }
    }
}

/// Appends the 14-byte id encoding (SPEC.md 1.4).
pub(crate) fn put_id(out: &mut Vec<u8>, id: &MessageId) {
    out.extend_from_slice(&id.epoch_ms.to_le_bytes());
    out.extend_from_slice(&id.shard.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
}

const NOTIFY_PRESENT: u8 = 1;
const NOTIFY_NEVER: u8 = 2;
const NOTIFY_SUCCESS: u8 = 4;
const NOTIFY_FAILURE: u8 = 8;
const NOTIFY_DELAY: u8 = 16;

fn notify_bits(n: &Option<Notify>) -> u8 {
    let Some(n) = n else { return 0 };
    let flag = |b: bool, v: u8| if b { v } else { 0 };
    NOTIFY_PRESENT
        | flag(n.never, NOTIFY_NEVER)
        | flag(n.success, NOTIFY_SUCCESS)
        | flag(n.failure, NOTIFY_FAILURE)
        | flag(n.delay, NOTIFY_DELAY)
}

/// Encodes the envelope part of a MESSAGE payload (see SPEC.md).
pub fn encode_envelope(env: &Envelope, out: &mut Vec<u8>) {
    put_bytes(out, env.mail_from.as_bytes());
    out.push(match env.ret {
        None => 0,
        Some(DsnRet::Full) => 1,
        Some(DsnRet::Hdrs) => 2,
    });
    put_opt_str(out, &env.envid);
    out.push(match env.body_type {
        BodyType::SevenBit => 0,
        BodyType::EightBitMime => 1,
        BodyType::BinaryMime => 2,
    });
    out.push(u8::from(env.smtputf8));
    put_opt_str(out, &env.auth_user);
    match env.peer {
        None => out.push(0),
        Some(IpAddr::V4(a)) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
    put_bytes(out, env.helo.as_bytes());
    out.extend_from_slice(&env.received_at_ms.to_le_bytes());
    put_u32(out, env.recipients.len() as u32);
    for r in &env.recipients {
        put_bytes(out, r.address.as_bytes());
        out.push(notify_bits(&r.notify));
        put_opt_str(out, &r.orcpt);
    }
    put_opt_str(out, &env.binding);
}

/// Encodes a MESSAGE frame straight from borrowed parts: no `Record` is
/// built, the body is copied once.
pub fn encode_message_frame(
    id: &MessageId,
    env: &Envelope,
    body: &[u8],
    file_offset: u64,
    out: &mut Vec<u8>,
) -> usize {
    let start = out.len();
    encode_message_head(id, env, body.len(), out);
    out.extend_from_slice(body);
    let frame = &mut out[start..];
    reframe(frame, file_offset);
    frame.len()
}

/// Appends the start of a MESSAGE frame whose `body_len` body octets are
/// not appended (the writer's hot path: the body stays where it is and is
/// copied once, into the write buffer). The header's length, type and
/// version are set; its offset check and CRC are left for
/// [`reframe_header`]. Returns the octets appended.
pub fn encode_message_head(
    id: &MessageId,
    env: &Envelope,
    body_len: usize,
    out: &mut Vec<u8>,
) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    put_id(out, id);
    encode_envelope(env, out);
    put_u32(out, body_len as u32);
    let payload_len = out.len() - start - FRAME_HEADER_LEN + body_len;
    let frame = &mut out[start..];
    frame[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    frame[4] = RecordType::Message as u8;
    frame[5] = RECORD_VERSION;
    out.len() - start
}

/// Writes the offset check and CRC into a frame's 16-octet `header` when
/// its payload is elsewhere, in `pieces` (read in place, not joined).
/// Gives the same bytes as [`reframe`] on the whole frame. (The CRC is
/// taken here, once the offset is known: combining a CRC taken earlier
/// costs more than reading the payload again.)
pub fn reframe_header(header: &mut [u8], file_offset: u64, pieces: &[&[u8]]) {
    header[8..12].copy_from_slice(&(file_offset as u32).to_le_bytes());
    let crc = pieces
        .iter()
        .fold(crc32c::crc32c(&header[0..12]), |crc, p| {
            crc32c::crc32c_append(crc, p)
        });
    header[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn encode_payload(rec: &Record, out: &mut Vec<u8>) {
    put_id(out, &rec.id());
    match rec {
        Record::Message { envelope, body, .. } => {
            encode_envelope(envelope, out);
            put_bytes(out, body);
        }
        Record::Outcome {
            rcpt,
            outcome,
            reply,
            ..
        } => {
            put_u32(out, *rcpt);
            out.push(outcome.to_u8());
            put_bytes(out, reply.as_bytes());
        }
        Record::Retry {
            next_attempt_ms,
            attempts,
            ..
        } => {
            out.extend_from_slice(&next_attempt_ms.to_le_bytes());
            put_u32(out, *attempts);
        }
        Record::Done { .. } => {}
        Record::Rebind { binding, .. } => put_opt_str(out, binding),
    }
}

/// A bounds-checked reader over a payload.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(le_u32(self.take(4)?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(le_u64(self.take(8)?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid("utf-8"))
    }
    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.string()?)),
            _ => Err(DecodeError::Invalid("option tag")),
        }
    }
    fn id(&mut self) -> Result<MessageId, DecodeError> {
        Ok(MessageId {
            epoch_ms: self.u64()?,
            shard: self.u16()?,
            seq: self.u32()?,
        })
    }
}

/// Decodes the envelope part of a MESSAGE payload of `version`.
fn decode_envelope(r: &mut Reader<'_>, version: u8) -> Result<Envelope, DecodeError> {
    let mail_from = r.string()?;
    let ret = match r.u8()? {
        0 => None,
        1 => Some(DsnRet::Full),
        2 => Some(DsnRet::Hdrs),
        _ => return Err(DecodeError::Invalid("ret")),
    };
    let envid = r.opt_string()?;
    let body_type = match r.u8()? {
        0 => BodyType::SevenBit,
        1 => BodyType::EightBitMime,
        2 => BodyType::BinaryMime,
        _ => return Err(DecodeError::Invalid("body type")),
    };
    let smtputf8 = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(DecodeError::Invalid("smtputf8")),
    };
    let auth_user = r.opt_string()?;
    let peer = match r.u8()? {
        0 => None,
        4 => {
            let b = r.take(4)?;
            Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        }
        6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(r.take(16)?);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => return Err(DecodeError::Invalid("peer")),
    };
    let helo = r.string()?;
    let received_at_ms = r.u64()?;
    let n = r.u32()? as usize;
    // Each recipient takes at least 6 bytes: refuse counts the payload
    // cannot hold before allocating.
    if n > r.buf.len() / 6 {
        return Err(DecodeError::Invalid("recipient count"));
    }
    let mut recipients = Vec::with_capacity(n);
    for _ in 0..n {
        let address = r.string()?;
        let bits = r.u8()?;
        if bits & !0x1f != 0 || (bits != 0 && bits & NOTIFY_PRESENT == 0) {
            return Err(DecodeError::Invalid("notify"));
        }
        let notify = (bits & NOTIFY_PRESENT != 0).then_some(Notify {
            never: bits & NOTIFY_NEVER != 0,
            success: bits & NOTIFY_SUCCESS != 0,
            failure: bits & NOTIFY_FAILURE != 0,
            delay: bits & NOTIFY_DELAY != 0,
        });
        let orcpt = r.opt_string()?;
        recipients.push(Recipient {
            address,
            notify,
            orcpt,
        });
    }
    // Version 1 had no binding: such mail was sent from the default.
    let binding = if version >= 2 { r.opt_string()? } else { None };
    Ok(Envelope {
        mail_from,
        ret,
        envid,
        body_type,
        smtputf8,
        recipients,
        auth_user,
        peer,
        helo,
        received_at_ms,
        binding,
    })
}

/// Decodes a MESSAGE payload's id and envelope (payload `version`, from
/// its frame), returning the body slice.
pub fn decode_message_parts(
    payload: &[u8],
    version: u8,
) -> Result<(MessageId, Envelope, &[u8]), DecodeError> {
    let mut r = Reader { buf: payload };
    let id = r.id()?;
    let env = decode_envelope(&mut r, version)?;
    let body = r.bytes()?;
    if !r.buf.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes"));
    }
    Ok((id, env, body))
}

/// Decodes a payload of the given type and version; every byte must be
/// consumed.
pub fn decode_payload(t: RecordType, version: u8, payload: &[u8]) -> Result<Record, DecodeError> {
    if t == RecordType::Message {
        let (id, envelope, body) = decode_message_parts(payload, version)?;
        return Ok(Record::Message {
            id,
            envelope,
            body: body.to_vec(),
        });
    }
    let mut r = Reader { buf: payload };
    let id = r.id()?;
    let rec = match t {
        RecordType::Message => return Err(DecodeError::Invalid("type")),
        RecordType::RecipientOutcome => Record::Outcome {
            id,
            rcpt: r.u32()?,
            outcome: Outcome::from_u8(r.u8()?).ok_or(DecodeError::Invalid("outcome"))?,
            reply: r.string()?,
        },
        RecordType::Retry => Record::Retry {
            id,
            next_attempt_ms: r.u64()?,
            attempts: r.u32()?,
        },
        RecordType::Done => Record::Done { id },
        RecordType::Rebind => Record::Rebind {
            id,
            binding: r.opt_string()?,
        },
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes"));
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_with_its_body_elsewhere_frames_like_the_whole() {
        let id = MessageId {
            epoch_ms: 7,
            shard: 1,
            seq: 2,
        };
        let env = Envelope::new("a@example.com", &["b@example.net"]);
        let (head, body) = (&b"Received: x\r\n"[..], &b"Subject: y\r\n\r\nz\r\n"[..]);
        let joined = [head, body].concat();
        let mut whole = Vec::new();
        encode_message_frame(&id, &env, &joined, 4096, &mut whole);
        let mut out = Vec::new();
        let own = encode_message_head(&id, &env, joined.len(), &mut out);
        assert_eq!(own, out.len());
        let (header, payload) = out.split_at_mut(FRAME_HEADER_LEN);
        reframe_header(header, 4096, &[payload, head, body]);
        out.extend_from_slice(head);
        out.extend_from_slice(body);
        assert_eq!(out, whole);
        assert!(check_frame(&out, 4096).is_ok());
    }
}
