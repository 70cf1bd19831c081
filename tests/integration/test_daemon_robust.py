"""netproxyd under bad input, limits, reloads and signals.

The first group turns the bugs of Prosody's mod_net_proxy into regression
tests; the others feed the daemon garbage, cut headers, untrusted peers,
dead and resetting backends, a thousand mixed connections, its connection
and file-descriptor limits, reloads under traffic and its command line.

Every case that hands the daemon bad input then checks that it still relays a
good connection, and every test that runs the daemon ends by checking that
its log holds no raw control byte from the wire. Everything runs on loopback; every wait is
bounded; every process started here is stopped by PID (the Netproxyd and
server context managers, or subprocess.run's timeout).
"""
import hashlib
import os
import random
import re
import resource
import selectors
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from npd import (REPO, EchoServer, Netproxyd, _Server, free_port, proxy_v1, proxy_v2, talk,
                 tool, wait_for)

# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
GOOD = proxy_v1("203.0.113.9", "192.0.2.1", 40000, 443)
UNTRUSTED = "127.0.0.2"  # loopback, but not in the default proxy_trusted_proxies


def lua_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "{ " + ", ".join(lua_value(x) for x in v) + " }"
    return '"' + str(v) + '"'


def conf(services, mappings, ports=None, extra=""):
    """A config: services {name: backend port | {key: value}}, mappings {port: name},
    ports (default: the mapped ones) listened on at 127.0.0.1."""
    ports = list(mappings) if ports is None else list(ports)
    out = ["proxy_ports = { " + ", ".join(f'"127.0.0.1:{p}"' for p in ports) + " }",
           "proxy_port_mappings = { " + ", ".join(f'[{p}] = "{s}"' for p, s in mappings.items())
           + " }",
           "services = {"]
    for name, spec in services.items():
        if isinstance(spec, int):
            spec = {"connect": f"127.0.0.1:{spec}"}
        out.append(f"  {name} = {{ " + ", ".join(f"{k} = {lua_value(v)}" for k, v in spec.items())
                   + " },")
    out.append("}")
    return "\n".join(out) + "\n" + extra


def simple(port, backend_port, extra=""):
    """One port, one plain service."""
    return conf({"svc": backend_port}, {port: "svc"}, extra=extra)


def dial(port, source=None, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port))
    except BaseException:
        s.close()
        raise
    return s


def wait_close(s, timeout):
    """Read s until the peer closes it. Returns (how, seconds, bytes): how is
    "eof", "reset" or "timeout"."""
    t0 = time.monotonic()
    got = bytearray()
    while True:
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            return "timeout", time.monotonic() - t0, bytes(got)
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return "timeout", time.monotonic() - t0, bytes(got)
        except ConnectionResetError:
            return "reset", time.monotonic() - t0, bytes(got)
        if not chunk:
            return "eof", time.monotonic() - t0, bytes(got)
        got += chunk


def recv_exactly(s, n, timeout=5.0):
    s.settimeout(timeout)
    got = bytearray()
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got)


def close_rst(s):
    """Close with SO_LINGER 0: the peer gets a RST."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


_serve_count = [0]


def assert_serves(d, port, header=GOOD):
    """A good connection on port (mapped to a plain echo service) round-trips."""
    _serve_count[0] += 1
    msg = b"still serving %d\n" % _serve_count[0]
    assert d.proc.poll() is None, f"netproxyd died ({d.proc.returncode}):\n{d.log()}"
    got, how = talk(port, header + msg, timeout=5)
    assert (got, how) == (msg, "eof"), f"good connection failed: {got!r} {how}\n{d.log()}"


def log_bytes(d):
    return d.log_path.read_bytes()


def assert_clean_log(d):
    """No byte of the log is a raw control character (newline aside) or non-ASCII."""
    raw = log_bytes(d)
    bad = sorted({b for b in raw if (b < 0x20 and b != 0x0A) or b >= 0x7F})
    assert not bad, f"raw bytes {bad} in the log:\n{raw!r}"


def assert_refused_at_once(d, s, echo, port, reason, timeout=3):
    """s is closed within a second with nothing sent back, the close line
    matches reason, the service saw no connection, and a good connection on
    port is served after it."""
    how, secs, got = wait_close(s, timeout)
    s.close()
    assert how in ("eof", "reset") and got == b"", (how, secs, d.log())
    assert secs < 1.0, f"closed after {secs:.2f} s, not at once"
    d.wait_log(reason)
    assert echo.records == []
    assert_serves(d, port)
    assert_clean_log(d)


def cpu_seconds(pid):
    """utime + stime of pid, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class StreamServer(_Server):
    """Sends 64 KiB chunks until the connection fails; notes when and how it ended."""

    def handle(self, conn, record):
        chunk = b"s" * 65536
        try:
            while True:
                conn.sendall(chunk)
        except OSError as e:
            record["ended"] = time.monotonic()
            record["end_error"] = e
            raise


class ResetServer(_Server):
    """Reads a little, sends 100 KiB, then resets the connection."""

    def handle(self, conn, record):
        record["received"] += conn.recv(4096)
        conn.sendall(b"r" * 102400)
        time.sleep(0.1)
        close_rst(conn)


class SelectEcho:
    """An echo backend on one selector thread, for many connections at once."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conns = {}
        while not self.stopping:
            for key, ev in self.sel.select(0.1):
                if key.data is None:
                    try:
                        c, _ = self.sock.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    self.accepted += 1
                    conns[c] = [bytearray(), False]
                    self.sel.register(c, selectors.EVENT_READ, c)
                    continue
                c = key.data
                st = conns[c]
                try:
                    if ev & selectors.EVENT_READ and not st[1]:
                        data = c.recv(65536)
                        if data:
                            st[0] += data
                        else:
                            st[1] = True
                    if st[0]:
                        n = c.send(st[0])
                        del st[0][:n]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    self.sel.unregister(c)
                    c.close()
                    del conns[c]
                    continue
                if st[1] and not st[0]:
                    self.sel.unregister(c)
                    try:
                        c.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    c.close()
                    del conns[c]
                    continue
                self.sel.modify(c, selectors.EVENT_READ | (selectors.EVENT_WRITE if st[0] else 0)
                                if not st[1] else selectors.EVENT_WRITE, c)
        for c in conns:
            c.close()

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sel.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# 1. mod_net_proxy's bugs, as regression tests
# ---------------------------------------------------------------------------

TLVS = (b"\x01\x00\x02h2"                      # ALPN "h2"
        + b"\x02\x00\x0bexample.com"           # AUTHORITY
        + b"\x04\x00\x03\x00\x00\x00")          # NOOP


@pytest.mark.parametrize("header", [
    proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, command=0),
    proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, command=0, tlvs=TLVS),
    # LOCAL with an address block and TLVs: the receiver must skip len bytes.
    V2_SIG + b"\x20\x11" + (12 + len(TLVS)).to_bytes(2, "big")
    + socket.inet_aton("198.51.100.1") + socket.inet_aton("198.51.100.2")
    + b"\x30\x39\x01\xbb" + TLVS,
], ids=["local", "local-tlvs", "local-addresses-tlvs"])
def test_local_v2_header_is_stripped_for_a_plain_backend(header):
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port)) as d:
        got, how = talk(port, header + b"ping")
        assert (got, how) == (b"ping", "eof"), d.log()
        # The backend saw the payload and nothing of the header.
        wait_for(lambda: echo.records and echo.records[0]["eof"], 5, "the backend's EOF")
        assert bytes(echo.records[0]["received"]) == b"ping"
        d.wait_log(r"proxy=v2-local .*reason=\"done\"")
        assert_serves(d, port)
        assert_clean_log(d)


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n",
                                  b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"],
                         ids=["bare", "with-addresses"])
def test_v1_unknown_is_accepted(line):
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port)) as d:
        got, how = talk(port, line + b"hello")
        assert (got, how) == (b"hello", "eof"), d.log()
        d.wait_log(r"proxy=v1-unknown .*reason=\"done\"")
        assert_serves(d, port)
        assert_clean_log(d)


@pytest.mark.parametrize("header", [
    V2_SIG + b"\x21\x11\x00\x08" + b"\x0a\x00\x00\x01\x0a\x00\x00\x02",   # TCP4: block is 12
    V2_SIG + b"\x21\x11\x00\x00",
    V2_SIG + b"\x21\x21\x00\x0c" + bytes(12),                            # TCP6: block is 36
    V2_SIG + b"\x21\x12\x00\x0b" + bytes(11),                            # UDP4
], ids=["tcp4-len8", "tcp4-len0", "tcp6-len12", "udp4-len11"])
def test_v2_len_shorter_than_the_address_block_is_rejected(header):
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port)) as d:
        # The old module read the addresses from the payload that followed.
        s = dial(port)
        s.sendall(header + b"\x01\x02\x03\x04payload-that-is-not-an-address")
        assert_refused_at_once(d, s, echo, port, r"reason=\"malformed header: .*NP_ESHORT")


def test_v1_107_byte_cap():
    accept = b"PROXY UNKNOWN " + b"x" * (107 - 16) + b"\r\n"
    refuse = b"PROXY UNKNOWN " + b"x" * (108 - 16) + b"\r\n"
    assert (len(accept), len(refuse)) == (107, 108)
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port)) as d:
        got, how = talk(port, accept + b"after")
        assert (got, how) == (b"after", "eof"), d.log()
        d.wait_log(r"proxy=v1-unknown .*reason=\"done\"")

        s = dial(port)
        s.sendall(refuse + b"after")
        how, secs, got = wait_close(s, 3)
        s.close()
        assert how in ("eof", "reset") and got == b"" and secs < 1, (how, secs)
        d.wait_log(r"reason=\"malformed header: .*NP_ETOOLONG")
        assert len(echo.records) == 1
        assert_serves(d, port)
        assert_clean_log(d)


@pytest.mark.parametrize("first", [b"GET", b"G", b"PROXZ", b"\r\n\r\n\x00\r\nQUIX",
                                   b"\r\n\r\x01"],
                         ids=["GET", "G", "PROXZ", "v2-sig-typo", "v2-sig-early"])
def test_non_proxy_bytes_are_rejected_at_once(first):
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port,
                                                "proxy_header_timeout = 5\n")) as d:
        s = dial(port)
        s.sendall(first)  # nothing more, no half-close: only the bytes can tell
        assert_refused_at_once(d, s, echo, port, r"reason=\"malformed header: .*NP_ENOTPROXY",
                               timeout=4)


@pytest.mark.parametrize("sport,dport", [(0, 65535), (65535, 0)])
def test_ports_0_and_65535_are_accepted(sport, dport):
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port)) as d:
        for header in (proxy_v1("198.51.100.1", "198.51.100.2", sport, dport),
                       proxy_v2("198.51.100.1", "198.51.100.2", sport, dport)):
            got, how = talk(port, header + b"data")
            assert (got, how) == (b"data", "eof"), d.log()
        lines = d.wait_log(rf"client=198\.51\.100\.1:{sport} dst=198\.51\.100\.2:{dport} "
                           r".*reason=\"done\"", count=2)
        assert {re.search(r"proxy=(\S+)", m.string).group(1) for m in lines} == {"v1", "v2"}
        assert_clean_log(d)


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 198.51.100.1 198.51.100.2 080 443\r\n",
    b"PROXY TCP4 198.51.100.1 198.51.100.2 80 0443\r\n",
    b"PROXY TCP4 198.51.100.1 198.51.100.2 00 443\r\n",
    b"PROXY TCP4 198.051.100.1 198.51.100.2 80 443\r\n",
    b"PROXY TCP4 198.51.100.1 198.51.100.02 80 443\r\n",
], ids=["sport-080", "dport-0443", "sport-00", "src-octet-051", "dst-octet-02"])
def test_v1_leading_zeros_are_rejected(line):
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port)) as d:
        s = dial(port)
        s.sendall(line + b"data")
        assert_refused_at_once(d, s, echo, port, r"reason=\"malformed header: ")


def test_silent_and_slow_senders_are_closed_at_the_header_timeout():
    port = free_port()
    header = proxy_v1("203.0.113.9", "192.0.2.1", 40000, 443)
    with EchoServer() as echo, Netproxyd(simple(port, echo.port,
                                                "proxy_header_timeout = 1\n")) as d:
        # name: seconds between bytes (None: silent)
        senders = {"silent": None, "slow-1s": 1.0, "drip-0.2s": 0.2}
        socks, sent, closed = {}, {}, {}
        t0 = time.monotonic()
        for name in senders:
            socks[name] = dial(port)
            socks[name].setblocking(False)
            sent[name] = 0
        next_at = {name: t0 for name in senders}
        while len(closed) < len(socks) and time.monotonic() - t0 < 5:
            now = time.monotonic()
            for name, s in socks.items():
                if name in closed:
                    continue
                gap = senders[name]
                if gap is not None and now >= next_at[name] and sent[name] < len(header) - 1:
                    try:
                        s.send(header[sent[name]:sent[name] + 1])
                        sent[name] += 1
                    except OSError:
                        closed[name] = now - t0
                        continue
                    next_at[name] += gap
                try:
                    if s.recv(1) == b"":
                        closed[name] = now - t0
                except BlockingIOError:
                    pass
                except OSError:
                    closed[name] = now - t0
            time.sleep(0.01)
        for s in socks.values():
            s.close()
        assert set(closed) == set(senders), f"still open after 5 s: {closed}\n{d.log()}"
        for name, secs in closed.items():
            assert 0.8 <= secs <= 3.0, f"{name} closed after {secs:.2f} s\n{d.log()}"
        d.wait_log(r"reason=\"header timeout", count=3)
        assert echo.records == []
        assert_serves(d, port)
        assert_clean_log(d)


# ---------------------------------------------------------------------------
# 2. Bad input
# ---------------------------------------------------------------------------

def test_random_garbage_is_refused():
    rng = random.Random(0x6e7078)
    blobs = [rng.randbytes(rng.randint(1, 600)) for _ in range(30)]
    # Header-ish garbage reaches deeper into the parsers.
    blobs += [V2_SIG + rng.randbytes(rng.randint(1, 200)) for _ in range(15)]
    blobs += [b"PROXY " + rng.randbytes(rng.randint(1, 200)) for _ in range(15)]
    blobs += [b"PROXY TCP4 " + bytes(rng.choice(b"0123456789. \r\n") for _ in range(60))
              for _ in range(10)]
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port)) as d:
        for i, blob in enumerate(blobs):
            got, how = talk(port, blob, timeout=3)
            assert got == b"" and how in ("eof", "reset"), (i, blob, got, how, d.log())
            assert d.proc.poll() is None, d.log()
        d.wait_log(r"conn=\d+ ", count=len(blobs))
        assert echo.records == []
        assert_serves(d, port)
        assert_clean_log(d)


@pytest.mark.parametrize("cut", [
    GOOD[:10],
    GOOD[:-1],                                               # everything but the LF
    proxy_v2("203.0.113.9", "192.0.2.1", 40000, 443)[:5],    # inside the signature
    proxy_v2("203.0.113.9", "192.0.2.1", 40000, 443)[:16],   # the fixed part only
    proxy_v2("203.0.113.9", "192.0.2.1", 40000, 443)[:22],   # inside the addresses
], ids=["v1-10", "v1-no-lf", "v2-5", "v2-16", "v2-22"])
def test_truncated_header_then_eof(cut):
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port)) as d:
        got, how = talk(port, cut, timeout=3)
        assert got == b"" and how in ("eof", "reset"), (got, how)
        d.wait_log(rf"reason=\"client closed before the header was complete \({len(cut)} bytes\)")
        assert echo.records == []
        assert_serves(d, port)
        assert_clean_log(d)


@pytest.mark.parametrize("payload_len,send", [
    (4096, 0),        # 16 + 4096 > 4096, only the fixed 16 bytes sent
    (65535, 0),
    (5000, 2000),     # part of the payload sent too
], ids=["fixed-only-4096", "fixed-only-65535", "partial-payload"])
def test_oversized_v2_is_rejected_at_once(payload_len, send):
    port = free_port()
    header = V2_SIG + b"\x21\x11" + payload_len.to_bytes(2, "big")
    body = (socket.inet_aton("203.0.113.9") + socket.inet_aton("192.0.2.1")
            + b"\x9c\x40\x01\xbb" + b"\x04" + (payload_len - 15).to_bytes(2, "big"))
    body += bytes(max(0, send - len(body)))
    with EchoServer() as echo, Netproxyd(simple(port, echo.port,
                                                "proxy_max_header = 4096\n"
                                                "proxy_header_timeout = 5\n")) as d:
        s = dial(port)
        s.sendall(header + body[:send])
        assert_refused_at_once(d, s, echo, port,
                               rf'reason="header of {16 + payload_len} bytes is larger than '
                               r'proxy_max_header \(4096\); raise proxy_max_header \(at most '
                               r'65551\) to accept it"', timeout=4)


def test_large_v2_header_within_proxy_max_header_is_accepted():
    """Not a bad input: the other side of the cap, a header of 20 KB in many segments."""
    port = free_port()
    tlvs = b"\x04" + (20000).to_bytes(2, "big") + bytes(20000)
    header = proxy_v2("203.0.113.9", "192.0.2.1", 40000, 443, tlvs=tlvs)
    with EchoServer() as echo, Netproxyd(simple(port, echo.port,
                                                "proxy_max_header = 65551\n")) as d:
        s = dial(port)
        for i in range(0, len(header), 1000):
            s.sendall(header[i:i + 1000])
            time.sleep(0.002)
        s.sendall(b"after a big header")
        s.shutdown(socket.SHUT_WR)
        how, _, got = wait_close(s, 5)
        s.close()
        assert (how, got) == ("eof", b"after a big header"), d.log()
        d.wait_log(r"client=203\.0\.113\.9:40000 .*proxy=v2 .*reason=\"done\"")
        assert_clean_log(d)


# The largest legal v2 header: length 65535, one 65520-byte TLV after the
# 12 bytes of IPv4 addresses; 65551 bytes in all.
LARGEST_V2 = proxy_v2("203.0.113.9", "192.0.2.1", 40000, 443,
                      tlvs=b"\x04" + (65520).to_bytes(2, "big") + bytes(range(256)) * 255
                      + bytes(240))


@pytest.mark.parametrize("send_proxy", [None, "v2"])
def test_largest_v2_header_with_proxy_max_header_raised(send_proxy):
    """65551 bytes of header, in segments, then data in the same writes: with
    proxy_max_header = 65551 the data reaches the service intact, after the
    whole header (stripped, or re-emitted without the TLV); and a NOOP TLV
    passed on keeps all of its 65520 bytes."""
    assert len(LARGEST_V2) == 65551
    port = free_port()
    tail = bytes(range(256)) * 64 + b"after the largest header"
    spec = {"connect": "127.0.0.1:0"}
    if send_proxy:
        spec.update(send_proxy=send_proxy, pass_tlvs=["NOOP"])
    with EchoServer() as echo:
        spec["connect"] = f"127.0.0.1:{echo.port}"
        with Netproxyd(conf({"svc": spec}, {port: "svc"},
                            extra="proxy_max_header = 65551\n")) as d:
            s = dial(port)
            data = LARGEST_V2 + tail
            for i in range(0, len(data), 7000):    # the header's end and the data share a write
                s.sendall(data[i:i + 7000])
            s.shutdown(socket.SHUT_WR)
            how, _, got = wait_close(s, 5)
            s.close()
            want = (LARGEST_V2 + tail) if send_proxy else tail
            assert how == "eof" and got == want, (how, len(got), d.log()[-2000:])
            line = d.wait_log(r"client=203\.0\.113\.9:40000 .*proxy=v2 .*reason=\"done\"")[0]
            assert f"up={len(tail)} " in line.string
            assert_clean_log(d)


def test_largest_v2_header_is_refused_by_default_saying_what_to_raise():
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port)) as d:
        s = dial(port)
        s.sendall(LARGEST_V2[:4096])
        assert_refused_at_once(d, s, echo, port,
                               r'proxy=- .*reason="header of 65551 bytes is larger than '
                               r'proxy_max_header \(4096\); raise proxy_max_header \(at most '
                               r'65551\) to accept it"')


def test_v1_line_over_a_small_proxy_max_header_says_what_to_raise():
    """A v1 line has no length up front: the line names the setting alone."""
    port = free_port()
    line = proxy_v1("203.0.113.9", "192.0.2.1", 40000, 443)
    assert len(line) > 30
    with EchoServer() as echo, Netproxyd(simple(port, echo.port,
                                                "proxy_max_header = 30\n")) as d:
        s = dial(port)
        s.sendall(line)
        how, secs, got = wait_close(s, 3)
        s.close()
        assert how in ("eof", "reset") and got == b"" and secs < 1, (how, d.log())
        d.wait_log(r'reason="header larger than proxy_max_header \(30\); raise '
                   r'proxy_max_header \(at most 65551\) to accept it"')
        assert echo.records == []
        assert_clean_log(d)


def test_untrusted_source_is_closed_before_reading():
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port,
                                                "proxy_header_timeout = 5\n")) as d:
        # Sending nothing: closed at once all the same, without waiting for a header.
        s = dial(port, source=UNTRUSTED)
        silent_port = s.getsockname()[1]
        how, secs, got = wait_close(s, 3)
        s.close()
        assert how in ("eof", "reset") and got == b"" and secs < 1, (how, secs, d.log())

        s = dial(port, source=UNTRUSTED)
        sport = s.getsockname()[1]
        try:
            s.sendall(GOOD + b"spoofed data")
        except OSError:
            pass  # already reset
        how, secs, got = wait_close(s, 3)
        s.close()
        assert how in ("eof", "reset") and got == b"" and secs < 1, (how, secs, d.log())

        for p in (silent_port, sport):
            d.wait_log(rf"rejected peer=127\.0\.0\.2:{p} port={port}: untrusted")
        # Rejected at accept and closed before a byte was read: no backend
        # connection can follow that line.
        assert echo.records == [], "the backend saw an untrusted connection"
        # Not a connection at all: no header phase, no close line of its own.
        assert not [c for c in d.close_lines() if c.get("peer", "").startswith("127.0.0.2:")]
        assert_serves(d, port)
        assert_clean_log(d)


def test_unmapped_port_warns_and_closes_after_the_header():
    mapped, unmapped = free_port(), free_port()
    with EchoServer() as echo, Netproxyd(conf({"svc": echo.port}, {mapped: "svc"},
                                              ports=[mapped, unmapped])) as d:
        warn = d.wait_log(rf"warning: .*port {unmapped} has no mapping")[0].string
        assert "netproxyd.conf.lua:1:" in warn
        s = dial(unmapped)
        s.sendall(GOOD[:12])
        how, _, _ = wait_close(s, 0.3)
        assert how == "timeout", "closed before the header was complete"
        s.sendall(GOOD[12:] + b"data")
        how, secs, got = wait_close(s, 3)
        s.close()
        assert how in ("eof", "reset") and got == b"" and secs < 1, (how, d.log())
        line = d.wait_log(rf"port={unmapped} .*reason=\"port {unmapped} has no mapping")[0].string
        assert "client=203.0.113.9:40000" in line
        assert echo.records == []
        assert_serves(d, mapped)
        assert_clean_log(d)


def test_mapping_to_no_service_warns_and_closes_that_port(tmp_path):
    """As mod_net_proxy: a mapping to a service that is not there is warned
    about at start and by -t (which still exits 0); that port's connections
    are closed after the header, saying why; every other port is served."""
    mapped, missing = free_port(), free_port()
    with EchoServer() as echo:
        cfg = conf({"svc": echo.port}, {mapped: "svc", missing: "no_such_service"})
        # Line 2 of the file: proxy_port_mappings.
        warning = (rf"2: proxy_port_mappings\[{missing}\]: maps to \"no_such_service\", which "
                   r"services does not define and which is not one of Prosody's services "
                   r"\(c2s, .*, proxy65\): its connections will be closed after the header")
        path = tmp_path / "t.lua"
        path.write_text(cfg)
        out = subprocess.run([tool("netproxyd"), "-t", "-c", str(path)], capture_output=True,
                             text=True, timeout=10)
        assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
        assert re.fullmatch(rf"netproxyd: warning: {re.escape(str(path))}:{warning}\n",
                            out.stderr), out.stderr
        assert (f"listen 127.0.0.1:{missing} -> no_such_service (not a service: connections "
                "closed after the header)") in out.stdout.splitlines(), out.stdout
        assert f"listen 127.0.0.1:{mapped} -> svc (127.0.0.1:{echo.port}, plain)" in out.stdout

        with Netproxyd(cfg) as d:
            d.wait_log(rf"warning: {re.escape(str(d.config_path))}:{warning}")
            s = dial(missing)
            s.sendall(GOOD[:12])
            how, _, _ = wait_close(s, 0.3)
            assert how == "timeout", "closed before the header was complete"
            s.sendall(GOOD[12:] + b"data")
            how, secs, got = wait_close(s, 3)
            s.close()
            assert how in ("eof", "reset") and got == b"" and secs < 1, (how, d.log())
            line = d.wait_log(rf"port={missing} service=- .*reason=\"port {missing} is mapped "
                              r"to no_such_service, which is not a service\"")[0].string
            assert "client=203.0.113.9:40000" in line and "warning: conn=" in line
            assert echo.records == []
            assert_serves(d, mapped)
            assert_clean_log(d)


def test_backend_down_closes_the_client():
    port, good_port, dead = free_port(), free_port(), free_port()
    with EchoServer() as echo, Netproxyd(conf({"dead": dead, "svc": echo.port},
                                              {port: "dead", good_port: "svc"})) as d:
        s = dial(port)
        s.sendall(GOOD + b"anyone there?")
        how, secs, got = wait_close(s, 3)
        s.close()
        assert how in ("eof", "reset") and got == b"" and secs < 1, (how, d.log())
        line = d.wait_log(rf"port={port} service=dead .*reason=\"backend dead .*"
                          r"(connect failed|unreachable)")[0].string
        assert "Connection refused" in line and "client=203.0.113.9:40000" in line
        assert_serves(d, good_port)
        assert_clean_log(d)


def test_backend_connect_timeout_with_a_full_listen_backlog():
    """A listener with backlog 0 whose one queue slot is taken drops further SYNs."""
    port, good_port = free_port(), free_port()
    full = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers = []
    try:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        for _ in range(8):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.settimeout(0.3)
            fillers.append(f)
            try:
                f.connect(full.getsockname())
            except (socket.timeout, BlockingIOError):
                break  # the queue is full: SYNs are dropped now
        else:
            pytest.skip("could not fill the listen backlog")
        with EchoServer() as echo, Netproxyd(conf(
                {"stuck": {"connect": f"127.0.0.1:{full.getsockname()[1]}",
                           "connect_timeout": 0.5},
                 "svc": echo.port},
                {port: "stuck", good_port: "svc"})) as d:
            s = dial(port)
            s.sendall(GOOD + b"hello")
            how, secs, got = wait_close(s, 4)
            s.close()
            assert how in ("eof", "reset") and got == b"", (how, d.log())
            assert 0.4 <= secs <= 2.0, f"closed after {secs:.2f} s\n{d.log()}"
            d.wait_log(rf"port={port} service=stuck .*reason=\"backend stuck .*"
                       r"connect timeout \(500 ms\)")
            assert_serves(d, good_port)
            assert_clean_log(d)
    finally:
        for f in fillers:
            f.close()
        full.close()


def test_client_reset_mid_stream_closes_the_backend():
    port = free_port()
    with StreamServer() as stream, EchoServer() as echo, Netproxyd(conf(
            {"stream": stream.port, "svc": echo.port},
            {port: "stream", (good := free_port()): "svc"})) as d:
        s = dial(port)
        s.sendall(GOOD)
        got = recv_exactly(s, 256 * 1024)
        assert len(got) == 256 * 1024, d.log()
        close_rst(s)
        wait_for(lambda: stream.records and "ended" in stream.records[0], 5,
                 "the backend to see its connection closed")
        line = d.wait_log(rf"port={port} service=stream .*reason=\"[^\"]+\"")[0].string
        assert "proxy=v1" in line and "client=203.0.113.9:40000" in line
        assert_serves(d, good)
        assert_clean_log(d)


def test_backend_reset_mid_stream_closes_the_client():
    port = free_port()
    with ResetServer() as rst, EchoServer() as echo, Netproxyd(conf(
            {"rst": rst.port, "svc": echo.port},
            {port: "rst", (good := free_port()): "svc"})) as d:
        s = dial(port)
        s.sendall(GOOD + b"go")
        how, secs, got = wait_close(s, 5)
        s.close()
        assert how in ("eof", "reset"), (how, d.log())
        assert set(got) <= {ord("r")} and len(got) <= 102400
        line = d.wait_log(rf"port={port} service=rst .*reason=\"[^\"]+\"")[0].string
        assert re.search(r"reason=\"(backend: .*|done)\"", line), line
        assert_serves(d, good)
        assert_clean_log(d)


def test_a_thousand_mixed_concurrent_connections():
    raise_nofile(8192)
    port = free_port()
    rng = random.Random(1000)
    kinds = ["good"] * 600 + ["garbage"] * 100 + ["truncated"] * 100 + \
            ["untrusted"] * 100 + ["slow"] * 100
    rng.shuffle(kinds)
    with SelectEcho() as echo, Netproxyd(conf({"svc": echo.port}, {port: "svc"},
                                              extra="proxy_header_timeout = 2\n")) as d:
        sel = selectors.DefaultSelector()
        conns = []
        t0 = time.monotonic()
        for i, kind in enumerate(kinds):
            payload = b""
            if kind == "good":
                payload = (b"%d:" % i) + rng.randbytes(rng.randint(1, 3000))
                out = GOOD + payload
            elif kind == "garbage":
                out = b"\x16\x03\x01" + rng.randbytes(rng.randint(1, 300))
            elif kind == "truncated":
                out = GOOD[:rng.randint(1, len(GOOD) - 1)]
            elif kind == "untrusted":
                out = GOOD + b"spoofed"
            else:
                out = GOOD[:1]
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            if kind == "untrusted":
                s.bind((UNTRUSTED, 0))
            s.connect_ex(("127.0.0.1", port))
            c = {"i": i, "kind": kind, "sock": s, "out": bytearray(out), "payload": payload,
                 "got": bytearray(), "end": None, "shut": kind in ("good", "truncated")}
            conns.append(c)
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        open_count = len(conns)
        deadline = t0 + 30
        while open_count and time.monotonic() < deadline:
            for key, ev in sel.select(0.2):
                c = key.data
                s = c["sock"]
                try:
                    if ev & selectors.EVENT_WRITE:
                        if c["out"]:
                            n = s.send(c["out"])
                            del c["out"][:n]
                        if not c["out"]:
                            if c["shut"]:
                                s.shutdown(socket.SHUT_WR)
                            sel.modify(s, selectors.EVENT_READ, c)
                    if ev & selectors.EVENT_READ:
                        data = s.recv(65536)
                        if data:
                            c["got"] += data
                        else:
                            c["end"] = "eof"
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    c["end"] = "reset" if isinstance(e, ConnectionResetError) else repr(e)
                if c["end"]:
                    sel.unregister(s)
                    s.close()
                    open_count -= 1
        elapsed = time.monotonic() - t0
        for c in conns:
            if c["end"] is None:
                sel.unregister(c["sock"])
                c["sock"].close()
        sel.close()

        stuck = [(c["i"], c["kind"]) for c in conns if c["end"] is None]
        assert not stuck, f"{len(stuck)} connections still open after 30 s: {stuck[:10]}"
        bad_good = [(c["i"], c["end"], len(c["got"]), len(c["payload"])) for c in conns
                    if c["kind"] == "good" and (c["end"] != "eof" or c["got"] != c["payload"])]
        assert not bad_good, f"{len(bad_good)} good connections lost data: {bad_good[:10]}"
        answered = [(c["i"], c["kind"]) for c in conns if c["kind"] != "good" and c["got"]]
        assert not answered, f"bad connections got data: {answered[:10]}"
        assert echo.accepted == 600
        assert elapsed < 20, f"took {elapsed:.1f} s"
        assert d.proc.poll() is None, d.log()
        assert_serves(d, port)
        assert_clean_log(d)


# ---------------------------------------------------------------------------
# 3. Limits
# ---------------------------------------------------------------------------

def test_max_connections():
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port,
                                                "workers = 1\nmax_connections = 5\n")) as d:
        held = []
        try:
            for i in range(5):
                s = dial(port)
                held.append(s)
                s.sendall(GOOD)
                echo_round(s, b"held %d" % i)
            s = dial(port)
            try:
                s.sendall(GOOD + b"one too many")
            except OSError:
                pass
            how, secs, got = wait_close(s, 3)
            s.close()
            assert how in ("eof", "reset") and got == b"" and secs < 1, (how, secs, d.log())
            d.wait_log(r"rejected peer=127\.0\.0\.1:\d+ port=%d: the connection limit \(5\) is "
                       r"reached, none of them waiting for its header" % port)
            # The five held ones still relay.
            for i, s in enumerate(held):
                echo_round(s, b"again %d" % i)
        finally:
            for s in held:
                s.close()
        d.wait_log(r"reason=\"done\"", count=5)
        # Room again: five at once work.
        socks = [dial(port) for _ in range(5)]
        try:
            for i, s in enumerate(socks):
                s.sendall(GOOD + b"new %d" % i)
            for i, s in enumerate(socks):
                assert recv_exactly(s, len(b"new %d" % i)) == b"new %d" % i, d.log()
        finally:
            for s in socks:
                s.close()
        assert_clean_log(d)


def test_emfile_is_shed_without_spinning():
    port = free_port()
    # The daemon's descriptor limit is 64 from the start (it is nobody once
    # running, and this test has no CAP_SYS_RESOURCE to lower it later).
    # A max_connections above what 64 descriptors hold, so that accept() itself fails.
    with EchoServer() as echo, Netproxyd(simple(port, echo.port,
                                                "workers = 1\nmax_connections = 100000\n"),
                                         prefix=["prlimit", "--nofile=64:64", "--"]) as d:
        pid = d.proc.pid
        d.wait_log(r"file descriptor limit: 64$")
        held = []
        try:
            # Ten relayed connections (two descriptors each), then silent ones that
            # wait for their header (one each) until accept() itself fails.
            for i in range(10):
                s = dial(port)
                held.append(s)
                s.sendall(GOOD)
                echo_round(s, b"held %d" % i)
            for i in range(60):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(s)
                s.settimeout(2)
                s.connect(("127.0.0.1", port))
            d.wait_log(r"connection on 127\.0\.0\.1:%d dropped: Too many open files" % port)
            # Overload: keep knocking for 2 s while everything is held.
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            knocks = 0
            while time.monotonic() - t0 < 2.0 and len(held) < 3000:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(s)
                s.settimeout(1)
                try:
                    s.connect(("127.0.0.1", port))
                    knocks += 1
                except OSError:
                    pass
                time.sleep(0.005)
            cpu = cpu_seconds(pid) - cpu0
            wall = time.monotonic() - t0
            assert d.proc.poll() is None, d.log()
            assert knocks > 50, knocks
            assert cpu < 0.5, f"netproxyd used {cpu:.2f} s of CPU in {wall:.2f} s of overload"
            # The knocks were shed (closed by the daemon), not left in the queue.
            shed = 0
            for s in held[70:]:
                s.setblocking(False)
                try:
                    shed += s.recv(1) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    shed += 1
            assert shed >= knocks // 2, (shed, knocks)
            # Each rejection logged (or counted as "not logged") is a connection
            # shed, not a turn of a loop: flush the count with one knock after
            # the one-second rate limit.
            before = len(d.wait_log(r"dropped: Too many open files"))
            time.sleep(1.1)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.settimeout(1)
            s.connect(("127.0.0.1", port))
            lines = d.wait_log(r"dropped: Too many open files", count=before + 1)
            counted = sum(1 + int(re.search(r"\(and (\d+) more", m.string).group(1))
                          if "more rejections" in m.string else 1 for m in lines)
            attempts = 60 + knocks + 1
            overcount = (f"{counted} rejections logged for {attempts} connections at most: "
                         f"each connection shed costs many accept() turns\n"
                         + "\n".join(m.string for m in lines[-3:]))
            # The relayed connections still work.
            for i, s in enumerate(held[:10]):
                echo_round(s, b"still %d" % i)
        finally:
            for s in held:
                s.close()

        # The load is gone: it serves again once its descriptors are back.
        def serves():
            try:
                got, how = talk(port, GOOD + b"back", timeout=2)
            except OSError:
                return False
            return (got, how) == (b"back", "eof")
        wait_for(serves, 10, "netproxyd to serve again")
        assert d.proc.poll() is None
        assert_clean_log(d)
        assert counted <= attempts, overcount


# ---------------------------------------------------------------------------
# 4. Reload
# ---------------------------------------------------------------------------

def echo_round(s, msg):
    s.sendall(msg)
    got = recv_exactly(s, len(msg))
    assert got == msg, (got, msg)


def test_reload_adds_and_removes_ports():
    stay, gone, new = free_port(), free_port(), free_port()
    with EchoServer() as echo, Netproxyd(conf({"svc": echo.port},
                                              {stay: "svc", gone: "svc"})) as d:
        # Plain service: the header is stripped, so the echo is the data alone.
        c_stay, c_gone = dial(stay), dial(gone)
        try:
            c_stay.sendall(GOOD + b"before stay\n")
            assert recv_exactly(c_stay, 12) == b"before stay\n"
            c_gone.sendall(GOOD + b"before gone\n")
            assert recv_exactly(c_gone, 12) == b"before gone\n"

            d.reload(conf({"svc": echo.port}, {stay: "svc", new: "svc"}))
            d.wait_log(r"reloaded: generation 2")

            def refused():
                try:
                    socket.create_connection(("127.0.0.1", gone), timeout=1).close()
                    return False
                except ConnectionRefusedError:
                    return True
            wait_for(refused, 3, f"port {gone} to refuse connections")
            assert_serves(d, new)
            assert_serves(d, stay)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", gone), timeout=1)

            # The connections made before the reload relay on, intact.
            echo_round(c_stay, b"after stay\n" * 100)
            echo_round(c_gone, b"after gone\n" * 100)
        finally:
            c_stay.close()
            c_gone.close()
        assert d.proc.poll() is None
        assert_clean_log(d)


@pytest.mark.parametrize("broken", [
    "proxy_ports = { 1,\nservices = {\n",
    'proxy_port_mappings = { [1] = "svc" }\n'
    'services = { svc = { connect = { "127.0.0.1:1", "127.0.0.2:1" } } }\n',
], ids=["syntax-error", "two-ipv4-addresses"])
def test_broken_config_on_reload_keeps_the_old_one(broken):
    port = free_port()
    with EchoServer() as echo, Netproxyd(simple(port, echo.port)) as d:
        s = dial(port)
        try:
            s.sendall(GOOD + b"before\n")
            assert recv_exactly(s, 7) == b"before\n"
            d.reload(broken)
            d.wait_log(r"reload failed")
            assert d.proc.poll() is None, d.log()
            assert_serves(d, port)
            echo_round(s, b"after\n")
        finally:
            s.close()
        assert "reloaded: generation" not in d.log()
        assert_clean_log(d)


def test_reload_under_traffic():
    port = free_port()
    nconn, chunks, chunk_size = 20, 40, 16384
    results = [None] * nconn

    def stream(i):
        rng = random.Random(i)
        try:
            s = dial(port, timeout=20)
        except OSError as e:
            results[i] = ("connect", repr(e))
            return
        sent_hash, got_hash = hashlib.sha256(), hashlib.sha256()
        got_len = [0]

        def reader():
            s.settimeout(20)
            try:
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    got_hash.update(data)
                    got_len[0] += len(data)
            except OSError as e:
                got_len.append(repr(e))
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            s.sendall(GOOD)
            for _ in range(chunks):
                data = rng.randbytes(chunk_size)
                sent_hash.update(data)
                s.sendall(data)
                time.sleep(0.05)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            results[i] = ("send", repr(e))
        t.join(20)
        s.close()
        if results[i] is None:
            results[i] = (got_len, got_hash.hexdigest() == sent_hash.hexdigest())

    with EchoServer() as echo, Netproxyd(simple(port, echo.port)) as d:
        threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(nconn)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        for n in range(5):
            d.reload(simple(port, echo.port, f"proxy_header_timeout = {5 + n % 2}\n"))
            d.wait_log(rf"reloaded: generation {n + 2}")
            time.sleep(0.25)
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "streams still running after 30 s"
        want = ([chunks * chunk_size], True)
        bad = [(i, r) for i, r in enumerate(results) if r != want]
        assert not bad, f"streams damaged: {bad}\n{d.log()[-3000:]}"
        d.wait_log(r"reason=\"done\"", count=nconn)
        assert_serves(d, port)
        assert_clean_log(d)


# ---------------------------------------------------------------------------
# 5. Signals and the command line
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sig,name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")])
def test_signal_stops_within_2s(sig, name):
    port = free_port()
    # shutdown_grace = 0: an open connection must not hold the exit up (the
    # grace period itself is test_daemon_stop.py's).
    with EchoServer() as echo, Netproxyd(simple(port, echo.port, "shutdown_grace = 0\n")) as d:
        s = dial(port)
        try:
            s.sendall(GOOD + b"x")
            assert recv_exactly(s, 1) == b"x"
            t0 = time.monotonic()
            d.proc.send_signal(sig)
            try:
                rc = d.proc.wait(2)
            except subprocess.TimeoutExpired:
                pytest.fail(f"netproxyd still running 2 s after {name}:\n{d.log()}")
            assert time.monotonic() - t0 < 2
            assert rc == 0, d.log()
            log = d.log()
            assert f"{name}: stopping" in log and "stopped" in log
            assert_clean_log(d)
        finally:
            s.close()


def test_check_valid_and_invalid_configs(tmp_path):
    good, bad = tmp_path / "good.lua", tmp_path / "bad.lua"
    good.write_text(simple(free_port(), free_port()))
    bad.write_text(simple(free_port(), free_port()).replace(
        "services", 'proxy_header_timeout = "soon"\nservices', 1))
    out = subprocess.run([tool("netproxyd"), "-t", "-c", str(good)], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert f"config {good} is valid" in out.stdout

    out = subprocess.run([tool("netproxyd"), "-t", "-c", str(bad)], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 1, out
    assert f"{bad}:3: proxy_header_timeout:" in out.stderr, out.stderr


@pytest.mark.parametrize("depth", [0, 6], ids=["short-path", "long-path"])
def test_check_syntax_error_names_the_file_and_line(tmp_path, depth):
    """Lua's own errors too must name the whole file: an operator copies it."""
    short = tempfile.TemporaryDirectory(prefix="npd", dir="/tmp")
    where = Path(short.name) if depth == 0 else tmp_path
    for i in range(depth):
        where = where / f"configuration-directory-{i}"
    where.mkdir(parents=True, exist_ok=True)
    syntax = where / "syntax.lua"
    syntax.write_text("proxy_ports = { 1,\n\nservices = {}\n")
    try:
        out = subprocess.run([tool("netproxyd"), "-t", "-c", str(syntax)], capture_output=True,
                             text=True, timeout=10)
    finally:
        short.cleanup()
    assert out.returncode == 1, out
    assert re.search(rf"{re.escape(str(syntax))}:\d+:", out.stderr), out.stderr


def test_help_mentions_every_option():
    out = subprocess.run([tool("netproxyd"), "--help"], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0 and out.stderr == ""
    source = (REPO / "daemon" / "main.c").read_text()
    options = re.findall(r'\{"([a-z-]+)", (?:no|required)_argument, NULL, (\'.\'|\w+)\}', source)
    assert len(options) >= 10, options
    for long, short in options:
        assert f"--{long}" in out.stdout, f"--help does not mention --{long}"
        if short.startswith("'"):
            assert re.search(rf"(^|[\s\[]){re.escape('-' + short[1])}\b", out.stdout), \
                f"--help does not mention -{short[1]}"


@pytest.mark.parametrize("args,rc,needle", [
    (["--bogus"], 2, "bogus"),
    (["-x"], 2, "x"),
    (["-l", "127.0.0.1:1"], 2, "-l and -b"),
    (["-b", "127.0.0.1:1"], 2, "-l and -b"),
    (["extra-argument"], 2, "extra-argument"),
], ids=["unknown-long", "unknown-short", "l-without-b", "b-without-l", "stray-argument"])
def test_bad_command_lines_exit_2(args, rc, needle):
    out = subprocess.run([tool("netproxyd")] + args, capture_output=True, text=True, timeout=10)
    assert out.returncode == rc, (out.returncode, out.stderr)
    assert needle in out.stderr


@pytest.mark.parametrize("check", [True, False], ids=["-t", "start"])
def test_missing_config_file_exits_1_naming_it(tmp_path, check):
    missing = tmp_path / "no-such.conf.lua"
    out = subprocess.run([tool("netproxyd"), "-c", str(missing)] + (["-t"] if check else []),
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 1, out
    assert str(missing) in out.stderr


def test_log_never_holds_raw_bytes_from_the_wire():
    port = free_port()
    nasty = [
        b"\r\n\r\n\x00\x1b[31mred\x07\x7f\xff",
        b"PROXY \x00\x1b[31mTCP4\r\n",
        b"PROXY TCP4 \x1b[31m1.2.3.4 5.6.7.8 1 2\r\n",
        V2_SIG + b"\x21\x1b[31m",
        b"\x00\x1b[31m\"quoted\\\"",
    ]
    with EchoServer() as echo, Netproxyd(simple(port, echo.port)) as d:
        for blob in nasty:
            got, how = talk(port, blob, timeout=3)
            assert got == b"" and how in ("eof", "reset")
            assert_serves(d, port)
        d.wait_log(r"malformed header", count=len(nasty))
        raw = log_bytes(d)
        assert b"\x1b" not in raw and b"\x00" not in raw
        assert b"\\x00" in raw and b"\\x1b" in raw
        assert_clean_log(d)
        # Each close line stays one line with a well-formed quoted reason.
        for line in d.log().splitlines():
            if "malformed header" in line:
                assert re.search(r'reason="(?:[^"\\]|\\.)*"$', line), line


# ---------------------------------------------------------------------------
# Urgent data and UNIX backends: reads that stop short
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fin", [True, False], ids=["then-FIN", "no-FIN"])
def test_urgent_data_costs_no_byte_after_it(fin):
    """TCP urgent data (MSG_OOB) makes recv() stop at its mark, so a short read
    no longer means the socket is drained. netproxyd is stopped while the
    client sends AAAA, an urgent B and CCCC (and its FIN), so that all of it
    waits in one queue: every ordinary byte must reach the service, and with
    the FIN, the end too (no end assumed early); without it, no stall. The
    urgent byte itself is out of band and is not relayed, as the kernel
    hands it out of the stream."""
    with EchoServer() as be:
        port = free_port()
        with Netproxyd(simple(port, be.port, 'workers = 1\n')) as d:
            s = dial(port)
            try:
                s.sendall(GOOD + b"first")
                wait_for(lambda: be.records and bytes(be.records[0]["received"]) == b"first",
                         what="the first bytes at the service")
                os.kill(d.proc.pid, signal.SIGSTOP)
                try:
                    s.sendall(b"AAAA")
                    s.send(b"B", socket.MSG_OOB)
                    s.sendall(b"CCCC")
                    if fin:
                        s.shutdown(socket.SHUT_WR)
                    time.sleep(0.3)
                finally:
                    os.kill(d.proc.pid, signal.SIGCONT)
                wait_for(lambda: bytes(be.records[0]["received"]) == b"firstAAAACCCC", 3.0,
                         f"all the ordinary bytes (got {bytes(be.records[0]['received'])!r})")
                if fin:
                    wait_for(lambda: be.records[0]["eof"], 3.0, "the client's FIN")
                    got = b""
                    while chunk := s.recv(4096):
                        got += chunk
                    assert got == b"firstAAAACCCC", got
                    d.wait_log(r'reason="done"')
            finally:
                s.close()


def test_unix_backend_relays_both_ways_with_a_header():
    """A service on a UNIX socket (connect = "unix:PATH"), with send_proxy
    v2: the header the service gets names the client, then 3 MiB go both
    ways unaltered (bulk reads, read to EAGAIN on the UNIX side), and the
    half-close comes back as the end."""
    # In a directory netproxyd, nobody once running, can reach.
    sockdir = tempfile.TemporaryDirectory(prefix="npd-unix-")
    os.chmod(sockdir.name, 0o755)
    path = Path(sockdir.name) / "svc.sock"
    port = free_port()
    blob = random.Random(7).randbytes(3 << 20)
    with EchoServer(path=path) as be:
        cfg = conf({"svc": {"connect": f"unix:{path}", "send_proxy": "v2"}}, {port: "svc"})
        with Netproxyd(cfg) as d:
            s = dial(port, timeout=10)
            try:
                s.sendall(proxy_v2("203.0.113.9", "192.0.2.1", 40000, 443) + blob)
                s.shutdown(socket.SHUT_WR)
                got = bytearray()
                while chunk := s.recv(1 << 20):
                    got += chunk
            finally:
                s.close()
            header = proxy_v2("203.0.113.9", "192.0.2.1", 40000, 443)
            received = bytes(be.records[0]["received"])
            assert received[:len(header)] == header
            assert hashlib.sha256(received[len(header):]).digest() == \
                hashlib.sha256(blob).digest()
            assert hashlib.sha256(got).digest() == hashlib.sha256(header + blob).digest()
            d.wait_log(r'service=svc .*client=203\.0\.113\.9:40000 .*reason="done"')


class Closer(_Server):
    """Closes each connection at once: cleanly, or with a reset (SO_LINGER 0)."""

    def __init__(self, reset):
        self.reset = reset
        super().__init__()

    def handle(self, conn, record):
        if self.reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("reset", [False, True], ids=["service-closes", "service-resets"])
def test_health_check_lines(reset):
    """A LOCAL header that moves no byte is a load balancer's health check: at
    the default level its close line is not logged, unless the service
    failed it (here by a reset), which is an info line with the reason."""
    with Closer(reset) as be:
        port = free_port()
        with Netproxyd(simple(port, be.port, "workers = 1\n")) as d:
            fds = lambda: len(os.listdir(f"/proc/{d.proc.pid}/fd"))  # noqa: E731
            idle = fds()
            talk(port, proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, command=0), shut=False)
            wait_for(lambda: be.records, what="the check at the service")
            # Closed when netproxyd holds no more descriptors than before it; a
            # worker writes a turn's lines before its next turn, so once a later
            # connection's line is out, the check's would be too.
            wait_for(lambda: fds() == idle, what="the check's connection closed")
            talk(port, GOOD + b"x")
            d.wait_log(r"proxy=v1 ")
            checks = [c for c in d.close_lines() if c.get("proxy") == "v2-local"]
            if reset:
                # The reset may come before or after the first write has gone.
                assert len(checks) == 1 and checks[0]["reason"] in (
                    "backend: Connection reset by peer",
                    f"backend svc (127.0.0.1:{be.port}) connect failed: Connection reset by "
                    f"peer"), d.log()
                # Reset after the connect: the service failed a relayed check, info;
                # reset during it: the service could not be reached, a warning.
                level = "warning" if "connect failed" in checks[0]["reason"] else "info"
                assert f" {level}: conn=" in next(l for l in d.log().splitlines()
                                                  if "v2-local" in l)
            else:
                assert checks == [], d.log()
