#!/usr/bin/env python3
"""Crash campaign: N kill -9 cycles of the real server under SMTP load.

usage: crash_campaign.py [--cycles N] [--clients K] [--size BYTES] [--seed S]
                         [--sink up|down] [--tmpfs SIZE] [--shards N]
                         [--drain-timeout SECS] [--json FILE] [--keep]
                         [--binary PATH]

A sink (asyncio SMTP server on 127.0.0.1, in a thread of this script)
stands behind `routes = ["127.0.0.1:PORT"]` and records the top-level
`X-Token:` header of every message it acknowledges with 250. K client
threads (smtplib) send messages tagged `X-Token: <cycle>-<thread>-<seq>`
and put a token in the acknowledged ledger only when the final reply to
DATA is 250. Each cycle starts `impulse serve`, waits until its port
accepts, lets the load run for a random 0.5-3 s (seeded), then SIGKILLs
it; the load keeps going (reconnecting) across cycles. After the last
cycle the load stops, the sink comes up, the server starts a last time
and runs until the sink holds every acknowledged token or every shard's
spool has no live message (or --drain-timeout), then gets SIGTERM.

The ledger: acknowledged, delivered (distinct acknowledged tokens seen at
the sink), lost (acknowledged, never delivered: must be 0), duplicates
(deliveries beyond the first of a token), unacknowledged-but-delivered
(the client never saw the 250, e.g. killed between fsync and reply), and
the spool state after the drain (`spool inspect`, `spool verify`). Exit
status 1 when lost > 0, 2 when the campaign could not run.

Each server run gets its own host name (r<cycle>.crash.test, the drain
r<N+1>), which it sends in EHLO to the sink, so every delivery is
attributed to the run that made it: a duplicate is either "across a
SIGKILL" (delivered by a run that was killed before its outcome was
durable, then again after recovery: at-least-once, expected) or "within
one server run" (never expected). The sink's clock only says when this
script got to the final dot, which can be some ms after a SIGKILL.

--sink down: the sink answers 421 at the greeting during the cycles, and
is up only for the final drain. --tmpfs SIZE: the spool is on a fresh
tmpfs of SIZE (e.g. 8m) with 1M segments and a 256K reserve, so it fills
up and the load sees 452 (not an acknowledgement).

Each server run's stderr goes to cycle-NNN.stderr (final.stderr for the
drain) in the run's temporary directory, with NAME.spool (free space and
the spool's files after each kill), inspect/verify output after the drain
and `spool show` of some lost or duplicated messages (show-TOKEN.txt).
That directory is kept with everything (a tmpfs spool copied to
spool-copy/) when a message was lost or with --keep, kept without the
spool when there were duplicates, otherwise removed. The impulse binary
is copied there first so a rebuild during the campaign cannot change the
server under test. Everything started here (servers, the mount, the
temporary directory) is cleaned up on exit, including on Ctrl-C. Only
127.0.0.1 is used. Python 3.11 standard library only; needs root for
--tmpfs.
"""
import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

LOOPBACK = "127.0.0.1"
DEFAULT_BINARY = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "..", "target", "release", "impulse")
MAIL_FROM = "crash@example.org"
RCPT_TO = "sink@example.net"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Sink


class Sink:
    """Minimal ESMTP server recording the X-Token of each accepted message."""

    def __init__(self, up):
        self.up = up
        self.lock = threading.Lock()
        # (token or None, time.monotonic(), session number, header section,
        #  the client's EHLO/HELO name)
        self.deliveries = []
        self.sessions = 0
        self.refused_sessions = 0
        self.port = None
        self._loop = None
        self._ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="sink", daemon=True)

    def start(self):
        self._thread.start()
        self._ready.wait(10)
        if self.port is None:
            raise RuntimeError(f"sink did not start: {self._error}")

    def set_up(self, up):
        self.up = up

    def tokens(self):
        with self.lock:
            return [d[0] for d in self.deliveries]

    def snapshot(self):
        with self.lock:
            return list(self.deliveries)

    def stop(self):
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
            except Exception:
                pass
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)

    async def _shutdown(self):
        self._server.close()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self):
        try:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(
                asyncio.start_server(self._session, LOOPBACK, 0, limit=1 << 20))
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            loop.run_forever()
            loop.close()
        except Exception as e:  # pragma: no cover - reported by start()
            self._error = e
            self._ready.set()

    async def _session(self, reader, writer):
        try:
            if not self.up:
                self.refused_sessions += 1
                writer.write(b"421 4.3.2 down\r\n")
                await writer.drain()
                return
            self.sessions += 1
            session = self.sessions
            writer.write(b"220 sink.test ESMTP\r\n")
            await writer.drain()
            in_txn = rcpts = 0
            helo = ""
            while True:
                line = await reader.readline()
                if not line:
                    return
                cmd = line.rstrip(b"\r\n")
                verb = cmd[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    helo = cmd[5:].strip().decode("ascii", "replace")
                    reply = (b"250-sink.test\r\n250 8BITMIME\r\n" if verb == b"EHLO"
                             else b"250 sink.test\r\n")
                elif verb == b"MAIL":
                    in_txn, rcpts = 1, 0
                    reply = b"250 2.1.0 ok\r\n"
                elif verb == b"RCPT":
                    if in_txn:
                        rcpts += 1
                        reply = b"250 2.1.5 ok\r\n"
                    else:
                        reply = b"503 5.5.1 MAIL first\r\n"
                elif verb == b"DATA":
                    if not rcpts:
                        reply = b"503 5.5.1 RCPT first\r\n"
                    else:
                        writer.write(b"354 go ahead\r\n")
                        await writer.drain()
                        got = await self._data(reader)
                        if got is False:
                            return  # connection closed inside DATA: not accepted
                        token, headers = got
                        with self.lock:
                            self.deliveries.append((token, time.monotonic(), session, headers, helo))
                        in_txn = rcpts = 0
                        reply = b"250 2.0.0 ok\r\n"
                elif verb == b"RSET":
                    in_txn = rcpts = 0
                    reply = b"250 2.0.0 ok\r\n"
                elif verb == b"NOOP":
                    reply = b"250 2.0.0 ok\r\n"
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:
                    reply = b"502 5.5.2 not implemented\r\n"
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, OSError):
            return
        except asyncio.CancelledError:
            return  # shutdown: end quietly (a cancelled handler task is logged)
        finally:
            try:
                writer.close()
            except Exception:
                pass

    @staticmethod
    async def _data(reader):
        """Reads a message up to the final dot; returns its top-level X-Token
        (None without one) and header section, or False if the connection
        closed first."""
        token, in_headers, headers = None, True, []
        while True:
            line = await reader.readline()
            if not line:
                return False
            if line in (b".\r\n", b".\n"):
                return token, b"".join(headers).decode("ascii", "replace")
            if line.startswith(b"."):
                line = line[1:]  # dot-unstuffing
            if in_headers:
                if line in (b"\r\n", b"\n"):
                    in_headers = False
                    continue
                if len(headers) < 40:
                    headers.append(line)
                if token is None and line[:8].lower() == b"x-token:":
                    token = line[8:].strip().decode("ascii", "replace")


# --------------------------------------------------------------------------
# Load


class Load:
    """K smtplib client threads; a token is acknowledged only on a 250 to DATA."""

    def __init__(self, port, clients, size):
        self.port = port
        self.clients = clients
        self.size = size
        self.cycle = 0
        self.stop_event = threading.Event()
        self.acked = [[] for _ in range(clients)]      # per thread: (token, queue id, t)
        self.attempted = [[] for _ in range(clients)]  # per thread: token (body sent)
        self.stats = [collections.Counter() for _ in range(clients)]
        self.threads = [threading.Thread(target=self._worker, args=(i,),
                                         name=f"load-{i}", daemon=True)
                        for i in range(clients)]
        line = b"x" * 76 + b"\r\n"
        filler = line * max(1, size // len(line))
        # A line starting with a dot exercises dot-stuffing both ways.
        self.filler = b"..leading dot line\r\n" + filler

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(30)

    def message(self, token):
        return (f"From: <{MAIL_FROM}>\r\nTo: <{RCPT_TO}>\r\n"
                f"Subject: crash campaign {token}\r\nX-Token: {token}\r\n\r\n"
                ).encode() + self.filler

    def _worker(self, i):
        st, acked, attempted = self.stats[i], self.acked[i], self.attempted[i]
        seq = 0
        stop = self.stop_event
        while not stop.is_set():
            s = smtplib.SMTP(timeout=10)
            try:
                try:
                    code, _ = s.connect(LOOPBACK, self.port)
                    if code != 220:
                        raise smtplib.SMTPConnectError(code, "greeting")
                    s.ehlo(f"load{i}.test")
                except ConnectionRefusedError:
                    st["connect refused"] += 1
                    stop.wait(0.05)
                    continue
                except smtplib.SMTPConnectError as e:
                    st[f"greeting {e.smtp_code}"] += 1
                    stop.wait(0.05)
                    continue
                except (OSError, smtplib.SMTPException):
                    st["connect error"] += 1
                    stop.wait(0.05)
                    continue
                st["sessions"] += 1
                while not stop.is_set():
                    code, _ = s.mail(MAIL_FROM)
                    if code != 250:
                        st[f"MAIL {code}"] += 1
                        if code == 421:
                            break
                        s.rset()
                        stop.wait(0.05)
                        continue
                    code, _ = s.rcpt(RCPT_TO)
                    if code != 250:
                        st[f"RCPT {code}"] += 1
                        if code == 421:
                            break
                        s.rset()
                        stop.wait(0.05)
                        continue
                    seq += 1
                    token = f"{self.cycle}-{i}-{seq}"
                    try:
                        code, reply = s.data(self.message(token))
                    except smtplib.SMTPDataError as e:  # no 354
                        st[f"DATA {e.smtp_code}"] += 1
                        if e.smtp_code == 421:
                            break
                        s.rset()
                        continue
                    finally:
                        # Counted as attempted once DATA was sent (the body may
                        # have been, and the server may have spooled it).
                        attempted.append(token)
                    if code == 250:
                        qid = reply.split()[-1].decode("ascii", "replace") if reply else ""
                        acked.append((token, qid, time.monotonic()))
                        st["final 250"] += 1
                    else:
                        st[f"final {code}"] += 1
                        if code == 421:
                            break
                        if code == 452:
                            stop.wait(0.05)
            except (OSError, smtplib.SMTPException):
                st["disconnected"] += 1
            finally:
                try:
                    s.close()
                except Exception:
                    pass

    def acked_tokens(self):
        return [a[0] for lst in self.acked for a in lst]

    def acked_count(self):
        return sum(len(lst) for lst in self.acked)

    def attempted_tokens(self):
        return [t for lst in self.attempted for t in lst]

    def merged_stats(self):
        total = collections.Counter()
        for c in self.stats:
            total.update(c)
        return total


# --------------------------------------------------------------------------
# Server control


def free_port():
    """A free loopback port below the ephemeral range, so that no client's
    source port (nor a TCP self-connect while the server is down) can take it."""
    lo = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1025, lo - 12000), lo)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port")


def port_accepts(port, timeout=0.2):
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


class Campaign:
    def __init__(self, args):
        self.args = args
        self.tmp = None
        self.mount = None
        self.proc = None
        self.proc_err = None
        self.sink = None
        self.load = None
        self.bin = None
        self.keep = args.keep
        self.kills = []      # (cycle, monotonic time of SIGKILL)
        self.cycle_log = []  # per-cycle dicts
        self.recovery = collections.Counter()
        self.ready_at = {}   # server run (cycle, N+1 = drain) -> when its port accepted

    # -- setup / teardown ---------------------------------------------------

    def setup(self):
        a = self.args
        self.tmp = tempfile.mkdtemp(prefix="impulse-crash-")
        log(f"run directory {self.tmp}")
        self.spoolbase = os.path.join(self.tmp, "spool")
        os.mkdir(self.spoolbase)
        if a.tmpfs:
            self.mount = self.spoolbase  # set first: an interrupt still unmounts
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={a.tmpfs}", "tmpfs",
                                self.spoolbase], capture_output=True, text=True)
            if r.returncode != 0:
                self.mount = None
                raise RuntimeError(f"mount tmpfs size={a.tmpfs}: {r.stderr.strip()}")
            log(f"tmpfs of {a.tmpfs} mounted on {self.spoolbase}")
        self.bin = self.snapshot_binary(a.binary)
        try:  # io_uring wants locked memory; inherited by the server
            resource.setrlimit(resource.RLIMIT_MEMLOCK,
                               (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (ValueError, OSError):
            pass
        self.sink = Sink(up=(a.sink == "up"))
        self.sink.start()
        self.port = free_port()
        self.config = os.path.join(self.tmp, "impulse.toml")
        with open(self.config, "w") as f:
            f.write(self.config_text())
        r = subprocess.run([self.bin, "check-config", self.config], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"config rejected:\n{r.stdout}{r.stderr}")
        log(f"server 127.0.0.1:{self.port}, sink 127.0.0.1:{self.sink.port} ({a.sink}), "
            f"{a.shards} shard(s), {a.clients} clients, {a.size} B messages, seed {a.seed}")

    def snapshot_binary(self, path, limit=300):
        """Copies the binary into the run directory (retrying while it is
        missing or being relinked) and checks that the copy runs."""
        dst = os.path.join(self.tmp, "impulse")
        start = time.monotonic()
        last = None
        while time.monotonic() - start < limit:
            try:
                st1 = os.stat(path)
                shutil.copyfile(path, dst)
                os.chmod(dst, 0o755)
                st2 = os.stat(path)
                if (st1.st_mtime_ns, st1.st_size) == (st2.st_mtime_ns, st2.st_size) and \
                        os.path.getsize(dst) == st2.st_size:
                    r = subprocess.run([dst, "version"], capture_output=True, text=True, timeout=30)
                    if r.returncode == 0:
                        with open(dst, "rb") as f:
                            digest = hashlib.sha256(f.read()).hexdigest()[:16]
                        self.bin_info = {
                            "path": os.path.abspath(path),
                            "version": r.stdout.strip(),
                            "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st2.st_mtime)),
                            "sha256": digest,
                        }
                        log(f"binary {self.bin_info}")
                        return dst
                    last = f"version exited {r.returncode}: {r.stderr.strip()}"
                else:
                    last = "changed while copying"
            except (OSError, subprocess.SubprocessError) as e:
                last = str(e)
            log(f"binary not usable yet ({last}); retrying")
            time.sleep(5)
        raise RuntimeError(f"{path}: not usable within {limit} s: {last}")

    def config_text(self, run=0):
        """The server config; `run` (the cycle, N+1 for the drain) is in the
        host name, hence in the EHLO the server sends the sink, so that
        every delivery can be attributed to the server run that made it."""
        a = self.args
        g = [
            f"shards = {a.shards}",
            f'spoolbase = "{self.spoolbase}"',
            f'log_dir = "{os.path.join(self.tmp, "log")}"',
            f'hostname = "{run_hostname(run)}"',
            "shutdown_timeout = 2",
            'relay_hosts = ["127.0.0.0/8"]',
            f'routes = ["{LOOPBACK}:{self.sink.port}"]',
            'tls = "no"',
            "retry_interval = 1",
            "max_retry_interval = 2",
        ]
        seg = a.segment_size or ("1M" if a.tmpfs else None)
        res = a.reserve_size or ("256K" if a.tmpfs else None)
        if seg:
            g.append(f'spool_segment_size = "{seg}"')
        if res:
            g.append(f'spool_reserve_size = "{res}"')
        if a.compact_interval is not None:
            g.append(f"spool_compact_interval_secs = {a.compact_interval}")
        return ("# written by perf/crash_campaign.py\n[global]\n" + "\n".join(g) +
                f'\n\n[listener.esmtp]\nlisten = ["{LOOPBACK}:{self.port}"]\n')

    def cleanup(self, lost, logs_only=False):
        self.kill_server()
        if self.load is not None:
            self.load.stop_event.set()
        if self.sink is not None:
            self.sink.stop()
        if self.mount and self.tmp and (lost or self.keep):
            dst = os.path.join(self.tmp, "spool-copy")
            try:
                shutil.copytree(self.mount, dst)
                log(f"copied the tmpfs spool to {dst}")
            except (OSError, shutil.Error) as e:
                log(f"copying the tmpfs spool: {e}")
        if self.mount:
            r = subprocess.run(["umount", self.mount], capture_output=True, text=True)
            if r.returncode != 0:
                log(f"umount {self.mount}: {r.stderr.strip()}; lazy unmount")
                subprocess.run(["umount", "-l", self.mount], capture_output=True)
            self.mount = None
        if self.tmp:
            if lost or self.keep:
                log(f"kept {self.tmp} (server stderr per cycle, spool"
                    f"{' (copy)' if self.args.tmpfs else ''}, config, binary)")
            elif logs_only:
                shutil.rmtree(self.spoolbase, ignore_errors=True)
                try:
                    os.unlink(os.path.join(self.tmp, "impulse"))
                except OSError:
                    pass
                log(f"kept {self.tmp} (server stderr per cycle and config; spool removed)")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)

    # -- server -------------------------------------------------------------

    def start_server(self, name, run, limit=120):
        with open(self.config, "w") as f:
            f.write(self.config_text(run))
        errpath = os.path.join(self.tmp, f"{name}.stderr")
        self.proc_err = open(errpath, "wb")
        self.proc = subprocess.Popen([self.bin, "serve", "--config", self.config],
                                     stdin=subprocess.DEVNULL, stdout=self.proc_err,
                                     stderr=self.proc_err, start_new_session=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before serving; "
                                   f"see {errpath}:\n{tail(errpath)}")
            if port_accepts(self.port):
                return time.monotonic() - t0
            time.sleep(0.02)
        raise RuntimeError(f"server port not accepting after {limit} s; see {errpath}")

    def kill_server(self, sig=signal.SIGKILL, limit=30):
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(limit)
            except subprocess.TimeoutExpired:
                log(f"server pid {p.pid} still running {limit} s after signal {int(sig)}; SIGKILL")
                p.kill()
                p.wait()
        self.proc = None
        if self.proc_err:
            self.proc_err.close()
            self.proc_err = None
        return p.returncode

    def spool_space(self, name):
        """Free space of the spool file system and the spool's files, written
        to NAME.spool (after each kill: how the spool evolves)."""
        st = os.statvfs(self.spoolbase)
        free = st.f_bavail * st.f_frsize
        lines = [f"free {free} of {st.f_blocks * st.f_frsize} bytes"]
        for root, _dirs, files in sorted(os.walk(self.spoolbase)):
            for fn in sorted(files):
                path = os.path.join(root, fn)
                try:
                    fst = os.stat(path)
                except OSError:
                    continue
                lines.append(f"{os.path.relpath(path, self.spoolbase)} size {fst.st_size} "
                             f"allocated {fst.st_blocks * 512}")
        with open(os.path.join(self.tmp, f"{name}.spool"), "w") as f:
            f.write("\n".join(lines) + "\n")
        return free

    def spool_inspect(self, save=None):
        """Per shard: dict of live, pending, problems (or error)."""
        out = []
        for n in range(self.args.shards):
            d = os.path.join(self.spoolbase, f"shard-{n}")
            r = subprocess.run([self.bin, "spool", "inspect", "--shard", str(n), d],
                               capture_output=True, text=True)
            if save:
                with open(os.path.join(self.tmp, f"{save}-shard-{n}.txt"), "w") as f:
                    f.write(r.stdout + r.stderr)
            info = {"shard": n, "rc": r.returncode}
            m = re.search(r"live messages: (\d+)", r.stdout)
            info["live"] = int(m.group(1)) if m else None
            m = re.search(r"pending recipients: (\d+)", r.stdout)
            info["pending"] = int(m.group(1)) if m else None
            m = re.search(r"segments: (\d+)\s+records: (\d+)", r.stdout)
            if m:
                info["segments"], info["records"] = int(m.group(1)), int(m.group(2))
            m = re.search(r"problems: (.*)", r.stdout)
            info["problems"] = m.group(1).strip() if m else (r.stderr.strip() or None)
            out.append(info)
        return out

    def spool_verify(self):
        out = []
        for n in range(self.args.shards):
            d = os.path.join(self.spoolbase, f"shard-{n}")
            r = subprocess.run([self.bin, "spool", "verify", "--shard", str(n), d],
                               capture_output=True, text=True)
            with open(os.path.join(self.tmp, f"verify-after-drain-shard-{n}.txt"), "w") as f:
                f.write(r.stdout + r.stderr)
            last = (r.stdout.strip().splitlines() or [r.stderr.strip()])[-1]
            out.append({"shard": n, "rc": r.returncode, "summary": last})
        return out

    def note_recovery(self, name):
        path = os.path.join(self.tmp, f"{name}.stderr")
        try:
            text = open(path, errors="replace").read()
        except OSError:
            return
        for m in re.finditer(r"recovered (\d+) message\(s\), (\d+) recipient\(s\) pending, "
                             r"(\d+) torn byte\(s\) truncated, (\d+) corrupt record\(s\) skipped", text):
            self.recovery["messages recovered"] += int(m.group(1))
            self.recovery["torn bytes truncated"] += int(m.group(3))
            self.recovery["corrupt records skipped"] += int(m.group(4))
        self.recovery["paniclog lines"] += text.count("paniclog")
        self.recovery["ERROR lines"] += len(re.findall(r"\bERROR\b", text))
        self.recovery["WARN lines"] += len(re.findall(r"\bWARN\b", text))

    # -- the campaign -------------------------------------------------------

    def run(self):
        a = self.args
        rng = random.Random(a.seed)
        self.load = Load(self.port, a.clients, a.size)
        self.load.start()
        t_start = time.monotonic()
        for c in range(1, a.cycles + 1):
            self.load.cycle = c
            name = f"cycle-{c:03d}"
            up = self.start_server(name, c)
            self.ready_at[c] = time.monotonic()
            before = self.load.acked_count()
            dur = rng.uniform(a.min_load, a.max_load)
            time.sleep(dur)
            self.kills.append((c, time.monotonic()))
            rc = self.kill_server(signal.SIGKILL)
            self.note_recovery(name)
            free = self.spool_space(name)
            acked = self.load.acked_count() - before
            self.cycle_log.append({"cycle": c, "startup_s": round(up, 3),
                                   "load_s": round(dur, 3), "acked": acked, "exit": rc,
                                   "spool_fs_free_after_kill": free})
            log(f"cycle {c}/{a.cycles}: up in {up:.2f} s, load {dur:.2f} s, +{acked} acked "
                f"(total {self.load.acked_count()}), sink {len(self.sink.tokens())}, "
                f"killed (exit {rc}), spool fs free {free // 1024} KiB")
            if rc != -signal.SIGKILL:
                log(f"  note: server exit status {rc} (expected -9): see {name}.stderr")
        self.cycles_s = time.monotonic() - t_start
        self.load.stop()
        self.load_stats = self.load.merged_stats()
        still = [t.name for t in self.load.threads if t.is_alive()]
        if still:
            log(f"load threads still alive after stop: {still}")

        # Final drain.
        self.sink.set_up(True)
        acked = set(self.load.acked_tokens())
        up = self.start_server("final", a.cycles + 1)
        t0 = time.monotonic()
        self.ready_at[a.cycles + 1] = t0
        deadline = t0 + a.drain_timeout
        reason, all_in_at, last_inspect, inspect = "deadline", None, 0.0, None
        while time.monotonic() < deadline:
            got = set(self.sink.tokens())
            now = time.monotonic()
            if acked <= got and all_in_at is None:
                all_in_at = now
            if now - last_inspect >= 1.0:
                last_inspect = now
                inspect = self.spool_inspect()
                if all(i["live"] == 0 for i in inspect):
                    reason = "no live message on any shard"
                    break
            # Every acknowledged token is in: give the rest of the queue (mail
            # accepted but never acknowledged) a short grace to drain too.
            if all_in_at is not None and now - all_in_at >= a.settle:
                reason = "sink holds every acknowledged token"
                break
            if self.proc.poll() is not None:
                reason = f"server exited ({self.proc.returncode})"
                break
            time.sleep(0.2)
        self.drain_s = time.monotonic() - t0
        self.drain_reason = reason
        self.drain_startup_s = up
        time.sleep(0.5)  # let an in-flight delivery to the sink finish
        self.final_exit = self.kill_server(signal.SIGTERM)
        self.note_recovery("final")
        log(f"drain: {reason} after {self.drain_s:.1f} s; SIGTERM exit {self.final_exit}")
        self.spool_after = self.spool_inspect(save="inspect-after-drain")
        self.spool_space("final")
        self.verify_after = self.spool_verify()

    # -- ledger -------------------------------------------------------------

    def ledger(self):
        acked_list = self.load.acked_tokens()
        acked = set(acked_list)
        qids = {a[0]: a[1] for lst in self.load.acked for a in lst}
        acked_time = {a[0]: a[2] for lst in self.load.acked for a in lst}
        attempted = set(self.load.attempted_tokens())
        deliveries = self.sink.snapshot()
        counts = collections.Counter(d[0] for d in deliveries if d[0] is not None)
        per_token = collections.defaultdict(list)
        for d in deliveries:
            if d[0] is not None:
                per_token[d[0]].append(d)
        delivered = acked & set(counts)
        lost = sorted(acked - set(counts), key=token_key)
        dups = {t: n - 1 for t, n in counts.items() if n > 1}
        unacked_delivered = (set(counts) - acked) & attempted
        foreign = set(counts) - attempted
        no_token = sum(1 for d in deliveries if d[0] is None)
        dup_detail = []
        across, within, window = 0, 0, []
        for t in sorted(dups, key=token_key):
            ds = per_token[t]
            # The delivering run comes from the EHLO name (exact); the sink's
            # clock only says when this process got around to the final dot.
            runs = [run_from_helo(d[4]) or self.run_of(d[1]) for d in ds]
            same_run = len(set(runs)) < len(runs)
            if same_run:
                within += 1
            else:
                across += 1
                r0 = runs[0]
                if r0 <= len(self.kills):
                    window.append(round((self.kills[r0 - 1][1] - ds[0][1]) * 1000, 1))
            dup_detail.append({
                "token": t, "queue_id": qids.get(t), "acked": t in acked,
                "deliveries": len(ds),
                "kind": "within one server run" if same_run else "across a SIGKILL",
                "acked_at": self.when(acked_time.get(t), token_run(t)),
                "delivered_at": [dict(self.when(d[1], r), sink_session=d[2])
                                 for d, r in zip(ds, runs)],
                "headers_first": ds[0][3], "headers_again": ds[1][3],
            })
        lost_detail = [{"token": t, "queue_id": qids.get(t),
                        "acked_at": self.when(acked_time.get(t), token_run(t))} for t in lost]
        return {
            "cycles": self.args.cycles,
            "acknowledged": len(acked),
            "acknowledged_replies": len(acked_list),
            "attempted": len(attempted),
            "delivered": len(delivered),
            "lost": len(lost),
            "duplicates": sum(dups.values()),
            "duplicated_tokens": len(dups),
            "duplicates_across_kill": across,
            "duplicates_within_run": within,
            "duplicates_across_kill_first_delivery_ms_before_kill":
                [min(window), max(window)] if window else None,
            "unacknowledged_but_delivered": len(unacked_delivered),
            "attempted_not_acked_not_delivered": len(attempted - acked - set(counts)),
            "foreign_tokens": len(foreign),
            "deliveries_without_token": no_token,
            "sink_deliveries": len(deliveries),
            "sink_sessions": self.sink.sessions,
            "sink_refused_sessions": self.sink.refused_sessions,
            "drain": {"reason": self.drain_reason, "seconds": round(self.drain_s, 1),
                      "startup_s": round(self.drain_startup_s, 3),
                      "sigterm_exit": self.final_exit},
            "spool_after_drain": self.spool_after,
            "verify_after_drain": self.verify_after,
            "recovery": dict(self.recovery),
            "load_replies": dict(sorted(self.load_stats.items())),
            "cycles_seconds": round(self.cycles_s, 1),
            "lost_tokens": lost_detail,
            "duplicate_tokens": dup_detail,
            "per_cycle": self.cycle_log,
        }

    def evidence(self, led, limit=10):
        """`spool show` of a few lost and duplicated messages, saved next to
        the server logs (show-TOKEN.txt) before the spool goes away."""
        lost = led["lost_tokens"]
        step = max(1, len(lost) // (3 * limit))
        picks = lost[::step][:3 * limit]  # spread over the whole list
        within = [d for d in led["duplicate_tokens"] if d["kind"] == "within one server run"]
        across = [d for d in led["duplicate_tokens"] if d["kind"] != "within one server run"]
        picks += within[:limit] + across[:max(2, limit // 5)]
        for d in picks:
            if not d.get("queue_id"):
                continue
            outs = []
            for n in range(self.args.shards):
                r = subprocess.run([self.bin, "spool", "show", "--dir",
                                    os.path.join(self.spoolbase, f"shard-{n}"), d["queue_id"]],
                                   capture_output=True, text=True)
                if r.returncode == 0:
                    outs.append(f"# shard-{n}\n{r.stdout}")
            path = os.path.join(self.tmp, f"show-{d['token']}.txt")
            text = "".join(outs)
            with open(path, "w") as f:
                f.write(text or f"{d['queue_id']}: not found in any shard\n")
            d["spool_show"] = os.path.basename(path)
            d["spool_records"] = dict(collections.Counter(
                m.group(1) for m in re.finditer(r"\.log@\d+: ([A-Z_]+) id=", text)))

    def run_of(self, at):
        """Index of the server run a moment falls in (cycles 1..N, N+1 = drain)."""
        for c, k in self.kills:
            if at <= k:
                return c
        return len(self.kills) + 1

    def when(self, at, run=None):
        """Places a monotonic time relative to server run `run` (default: the
        run whose lifetime it falls in): ms after its port accepted, and ms
        before its SIGKILL (negative: after it)."""
        if at is None:
            return {}
        c = run or self.run_of(at)
        ready = self.ready_at.get(c)
        out = {"run": c, "drain": c > len(self.kills)}
        if ready is not None:
            out["after_ready_ms"] = round((at - ready) * 1000, 1)
        if c <= len(self.kills):
            out["before_kill_ms"] = round((self.kills[c - 1][1] - at) * 1000, 1)
        return out


def run_hostname(run):
    return f"r{run}.crash.test"


def run_from_helo(helo):
    m = re.fullmatch(r"r(\d+)\.crash\.test", helo or "")
    return int(m.group(1)) if m else None


def token_run(t):
    """The server run that acknowledged a token: the cycle it was sent in
    (a client only gets a 250 from the server of the current cycle)."""
    try:
        return int(t.split("-")[0])
    except ValueError:
        return None


def token_key(t):
    try:
        return tuple(int(x) for x in t.split("-"))
    except ValueError:
        return (1 << 62, t)


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def dup_summary(led):
    text = f'{led["duplicates"]} over {led["duplicated_tokens"]} token(s)'
    if led["duplicated_tokens"]:
        w = led["duplicates_across_kill_first_delivery_ms_before_kill"]
        text += (f': {led["duplicates_across_kill"]} across a SIGKILL'
                 + (f' (first delivery seen at the sink {w[0]} to {w[1]} ms before that '
                    f'run\'s SIGKILL; negative = after it)' if w else '')
                 + f', {led["duplicates_within_run"]} within one server run')
    return text


def lost_in_spool(led):
    shown = [d for d in led["lost_tokens"] if "spool_records" in d]
    if not shown:
        return "-"
    queued = sum(1 for d in shown if d["spool_records"].get("MESSAGE") and
                 not d["spool_records"].get("DONE"))
    return (f"{queued} of {len(shown)} checked have a MESSAGE and no DONE record "
            f"(records of the first: {shown[0]['spool_records']})")


def print_table(led, args, info, out=sys.stdout):
    rows = [
        ("cycles", led["cycles"]),
        ("acknowledged", led["acknowledged"]),
        ("delivered (acknowledged, at sink)", led["delivered"]),
        ("lost (must be 0)", led["lost"]),
        ("duplicates (deliveries beyond first)", dup_summary(led)),
        ("unacknowledged but delivered", led["unacknowledged_but_delivered"]),
        ("attempted, not acked, not delivered", led["attempted_not_acked_not_delivered"]),
        ("lost and still in the spool (spool show)", lost_in_spool(led)),
        ("tokens never sent / deliveries w/o token", f'{led["foreign_tokens"]} / {led["deliveries_without_token"]}'),
        ("sink deliveries total", led["sink_deliveries"]),
        ("drain", f'{led["drain"]["reason"]} after {led["drain"]["seconds"]} s; '
                  f'SIGTERM exit {led["drain"]["sigterm_exit"]}'),
    ]
    for s in led["spool_after_drain"]:
        rows.append((f'spool shard-{s["shard"]} after drain',
                     f'live {s["live"]}, pending rcpts {s["pending"]}, segments {s.get("segments")}, '
                     f'records {s.get("records")}; problems: {s["problems"]}'))
    for v in led["verify_after_drain"]:
        rows.append((f'spool verify shard-{v["shard"]}', f'exit {v["rc"]}: {v["summary"]}'))
    rec = led["recovery"]
    rows.append(("server logs (all runs)",
                 f'recovered {rec.get("messages recovered", 0)} msgs, torn bytes '
                 f'{rec.get("torn bytes truncated", 0)}, corrupt records {rec.get("corrupt records skipped", 0)}, '
                 f'ERROR {rec.get("ERROR lines", 0)}, WARN {rec.get("WARN lines", 0)}, '
                 f'paniclog {rec.get("paniclog lines", 0)}'))
    lr = led["load_replies"]
    rows.append(("load replies", ", ".join(f"{k}: {v}" for k, v in lr.items())))
    rows.append(("time", f'{led["cycles_seconds"]} s of cycles + {led["drain"]["seconds"]} s drain'))
    mode = f"sink {args.sink}, " + (f"tmpfs {args.tmpfs}" if args.tmpfs else "disk")
    print(f"\ncrash campaign: {mode}; {args.shards} shards, {args.clients} clients, "
          f"{args.size} B, seed {args.seed}; impulse {info.get('version')} "
          f"(sha256 {info.get('sha256')}, built {info.get('mtime')})", file=out)
    w = max(len(k) for k, _ in rows)
    print("-" * (w + 60), file=out)
    for k, v in rows:
        print(f"{k:<{w}}  {v}", file=out)
    print("-" * (w + 60), file=out)
    if led["lost_tokens"]:
        print(f"LOST tokens ({len(led['lost_tokens'])}):", file=out)
        if len(led["lost_tokens"]) > 50:
            print("  (first 50; all in the JSON ledger)", file=out)
        for d in led["lost_tokens"][:50]:
            w = d["acked_at"]
            print(f"  {d['token']:<11} id {d['queue_id']}  acked r{w.get('run')} "
                  f"kill{-w.get('before_kill_ms', 0):+.1f}ms  {d.get('spool_show', '')}", file=out)
    if led["duplicate_tokens"]:
        print(f"DUPLICATED tokens ({len(led['duplicate_tokens'])}): run N = the server run of "
              f"cycle N (the drain is run {args.cycles + 1}), times at the sink/client relative "
              f"to that run's SIGKILL (kill-X ms = before it), sN = sink session", file=out)
        fmt = lambda w: (f"r{w.get('run')} "
                         + (f"kill{-w['before_kill_ms']:+.1f}ms" if "before_kill_ms" in w
                            else f"ready+{w.get('after_ready_ms')}ms")
                         + (f" s{w['sink_session']}" if "sink_session" in w else ""))
        for kind in ("within one server run", "across a SIGKILL"):
            ds = [d for d in led["duplicate_tokens"] if d["kind"] == kind]
            if ds:
                print(f" {kind}: {len(ds)} token(s){', first 25' if len(ds) > 25 else ''}", file=out)
            for d in ds[:25]:
                print(f"  {d['token']:<11} id {d['queue_id']}  acked {fmt(d['acked_at'])}  delivered "
                      + ", ".join(fmt(w) for w in d["delivered_at"])
                      + f"  {d.get('spool_show', '')}", file=out)
    out.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--size", type=int, default=4096, help="message body bytes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sink", choices=["up", "down"], default="up")
    p.add_argument("--tmpfs", metavar="SIZE", help="spool on a fresh tmpfs of SIZE (e.g. 8m)")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--settle", type=float, default=5.0,
                   help="after every acknowledged token arrived, wait up to this long for the "
                        "spool to have no live message")
    p.add_argument("--min-load", type=float, default=0.5)
    p.add_argument("--max-load", type=float, default=3.0)
    p.add_argument("--segment-size", help='spool_segment_size (default: "1M" with --tmpfs)')
    p.add_argument("--reserve-size", help='spool_reserve_size (default: "256K" with --tmpfs)')
    p.add_argument("--compact-interval", type=int, help="spool_compact_interval_secs")
    p.add_argument("--json", metavar="FILE", help="write the ledger as JSON")
    p.add_argument("--keep", action="store_true", help="keep the run directory")
    p.add_argument("--binary", default=os.path.normpath(DEFAULT_BINARY))
    args = p.parse_args()
    if args.tmpfs and os.geteuid() != 0:
        p.error("--tmpfs needs root")

    # SIGTERM/SIGHUP behave like Ctrl-C: unwind through the cleanup.
    def interrupted(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    camp = Campaign(args)
    lost = logs_only = False
    status = 2
    try:
        camp.setup()
        camp.run()
        led = camp.ledger()
        camp.evidence(led)
        led["binary"] = camp.bin_info
        led["args"] = vars(args)
        lost = led["lost"] > 0
        if lost or led["duplicates"]:
            led["run_directory"] = camp.tmp
        print_table(led, args, camp.bin_info)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(led, f, indent=2)
            log(f"ledger written to {args.json}")
        status = 1 if lost else 0
        logs_only = bool(led["duplicates"])  # the per-cycle stderr is the evidence
    except KeyboardInterrupt as e:
        log(f"interrupted ({str(e) or 'Ctrl-C'}); cleaning up")
        status = 130
    except Exception as e:
        log(f"campaign failed: {e}")
        camp.keep = camp.keep or bool(camp.tmp)
        status = 2
    finally:
        # Ignore further Ctrl-C while the server, mount and directory go away.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        camp.cleanup(lost, logs_only)
    sys.exit(status)


if __name__ == "__main__":
    main()
