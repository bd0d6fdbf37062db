#!/usr/bin/env python3
"""Builds the spool test vectors from SPEC.md, independently of the Rust code.

Writes NAME.seg (segment image) and NAME.txt (expected decoding, one line
per item, in the format tests/spool_vectors.rs renders). Run from this dir.
"""
import struct

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

def esc(b):
    out = []
    for c in b:
        ch = chr(c)
        if ch == '\t': out.append('\\t')
        elif ch == '\r': out.append('\\r')
        elif ch == '\n': out.append('\\n')
        elif ch in '\'"\\': out.append('\\' + ch)
        elif 0x20 <= c < 0x7f: out.append(ch)
        else: out.append('\\x%02x' % c)
    return '"' + ''.join(out) + '"'

def bstr(b): return struct.pack('<I', len(b)) + b
def ostr(s): return b'\x00' if s is None else b'\x01' + bstr(s)
def idb(i): return struct.pack('<QHI', *i)
def idtxt(i): return '%012X-%02X-%08X' % i

def header(shard, seg, created):
    h = b'IMPSPOOL' + struct.pack('<HHIQI', 1, shard, seg, created, 0)
    return h + struct.pack('<I', crc32c(h))

def frame(rtype, payload, off, version=2):
    h = struct.pack('<IBBHI', len(payload), rtype, version, 0, off & 0xFFFFFFFF)
    return h + struct.pack('<I', crc32c(h + payload))

def message(i, mail_from, ret, envid, body_type, utf8, auth, peer, helo, rcv, rcpts, body, binding=None, version=2):
    p = idb(i) + bstr(mail_from) + bytes([ret]) + ostr(envid) + bytes([body_type, utf8]) + ostr(auth)
    p += peer + bstr(helo) + struct.pack('<Q', rcv) + struct.pack('<I', len(rcpts))
    for addr, notify, orcpt in rcpts:
        p += bstr(addr) + bytes([notify]) + ostr(orcpt)
    if version >= 2:
        p += ostr(binding)
    p += bstr(body)
    return p

NOTIFY = [(2, 'NEVER'), (4, 'SUCCESS'), (8, 'FAILURE'), (16, 'DELAY')]
def notify_txt(n):
    if n == 0: return '-'
    return ','.join(name for bit, name in NOTIFY if n & bit) or 'none'

ID1 = (0x018BCFE56800, 3, 1)
ID2 = (0x018BCFE56800, 3, 2)
BODY1 = b'Subject: hi\r\n\r\nhello\r\n'
MSG1 = message(ID1, b'alice@example.org', 1, b'env-42', 1, 0, b'alice', b'\x06' + bytes.fromhex('20010db8000000000000000000000001'),
               b'mx.example.org', 1700000000123,
               [(b'bob@example.net', 1 | 4 | 8, b'rfc822;bob@example.net'), (b'carol@example.com', 0, None)], BODY1,
               binding=b'vip-1')
MSG1_TXT = ('MESSAGE id=%s from="alice@example.org" ret=FULL envid="env-42" body=8BITMIME smtputf8=0 auth="alice" '
            'peer=2001:db8::1 helo="mx.example.org" received_at_ms=1700000000123 '
            'rcpt[0]="bob@example.net" notify=SUCCESS,FAILURE orcpt="rfc822;bob@example.net" '
            'rcpt[1]="carol@example.com" notify=- orcpt=- binding="vip-1" body_len=%d body=%s') % (idtxt(ID1), len(BODY1), esc(BODY1))
BODY2 = b'x'
MSG2 = message(ID2, b'', 0, None, 0, 1, None, b'\x04' + bytes([192, 0, 2, 7]), b'h', 5, [(b'd@e.f', 1 | 2, None)], BODY2)
MSG2_TXT = ('MESSAGE id=%s from="" ret=- envid=- body=7BIT smtputf8=1 auth=- peer=192.0.2.7 helo="h" received_at_ms=5 '
            'rcpt[0]="d@e.f" notify=NEVER orcpt=- binding=- body_len=1 body="x"') % idtxt(ID2)
# Version 1 (before bindings): no binding field; it reads as the default.
MSG2_V1 = message(ID2, b'', 0, None, 0, 1, None, b'\x04' + bytes([192, 0, 2, 7]), b'h', 5, [(b'd@e.f', 1 | 2, None)], BODY2, version=1)
OUT1 = idb(ID1) + struct.pack('<IB', 1, 1) + bstr(b'250 2.0.0 ok')
OUT1_TXT = 'OUTCOME id=%s rcpt=1 outcome=delivered reply="250 2.0.0 ok"' % idtxt(ID1)
RETRY1 = idb(ID1) + struct.pack('<QI', 1700000600000, 3)
RETRY1_TXT = 'RETRY id=%s next_attempt_ms=1700000600000 attempts=3' % idtxt(ID1)
REBIND1 = idb(ID1) + ostr(b'vip-2')
REBIND1_TXT = 'REBIND id=%s binding="vip-2"' % idtxt(ID1)
DONE2 = idb(ID2)
DONE2_TXT = 'DONE id=%s' % idtxt(ID2)

def build(name, shard, seg, created, recs, mangle=None, cut=0, version=2):
    data = bytearray(header(shard, seg, created))
    lines = ['header version=1 shard=%d segment=%d created_ms=%d' % (shard, seg, created)]
    spans = []
    for rtype, payload, txt in recs:
        off = len(data)
        data += frame(rtype, payload, off, version) + payload
        spans.append((off, len(data), txt))
    if mangle is not None:
        idx, delta = mangle
        s, e, _ = spans[idx]
        data[s + delta] ^= 0x40
    if cut:
        data = data[:-cut]
    for n, (s, e, txt) in enumerate(spans):
        if mangle is not None and n == mangle[0]:
            lines.append('corrupt @%d..%d' % (s, e))
        elif e <= len(data):
            lines.append('@%d %s' % (s, txt))
    torn = len(data) - spans[-1][0] if cut else 0
    lines.append('torn_bytes %d' % torn)
    open(name + '.seg', 'wb').write(bytes(data))
    open(name + '.txt', 'w').write('\n'.join(lines) + '\n')

ALL = [(1, MSG1, MSG1_TXT), (2, OUT1, OUT1_TXT), (3, RETRY1, RETRY1_TXT), (5, REBIND1, REBIND1_TXT), (1, MSG2, MSG2_TXT), (4, DONE2, DONE2_TXT)]
build('basic', 3, 1, 1700000000000, ALL)
build('torn-tail', 3, 2, 1700000000001, ALL[:5], cut=7)
build('corrupt-middle', 3, 3, 1700000000002, ALL[:3], mangle=(1, 20))
build('v1', 3, 4, 1700000000003, [(1, MSG2_V1, MSG2_TXT), (4, DONE2, DONE2_TXT)], version=1)
