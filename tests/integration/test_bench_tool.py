"""netproxy-bench, the load generator and its backend, against real sockets.

The load generator runs against ProtoServer, a Python server in this file
that speaks the benchmark's protocol (see netproxy-bench(1)) and records every
PROXY header and request it sees, so that counts, sizes and headers can be
checked from the other side; against servers that misbehave on purpose, for
each kind of error; against `netproxy-bench serve`, the C backend; and once
through netproxyd. Headers are decoded by the built netproxy-dump --json.

These tests check what is counted, never how fast: a run's speed depends on
the machine. Every run is bounded by -n or -d and by a subprocess timeout.
"""
import json
import os
import re
import resource
import signal
import socket
import subprocess
import threading

import pytest

from npd import REPO, Netproxyd, _Server, build_dir, free_port, stop_pid, tool, wait_for

TIMEOUT = 30          # seconds: no subprocess or wait outlasts it
EXIT_FAIL, EXIT_USAGE = 1, 64
HEAD_LEN = 16
V2_SIG = b"\r\n\r\n\0\r\nQUIT\n"
V2_IPV4_LEN = 28      # a v2 header over TCP4 without TLVs


def pattern(offset, n):
    """The bytes the protocol sends: byte i of a body or a response is i mod 251."""
    return bytes((offset + i) % 251 for i in range(n))


def bench(*args, timeout=TIMEOUT, preexec_fn=None):
    """Run netproxy-bench with --json; returns (exit status, the report or None, stderr)."""
    r = subprocess.run([tool("netproxy-bench"), "--json", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, preexec_fn=preexec_fn)
    report = json.loads(r.stdout) if r.stdout.strip() else None
    return r.returncode, report, r.stderr


def dump(header):
    r = subprocess.run([tool("netproxy-dump"), "--json"], input=header, capture_output=True,
                       timeout=TIMEOUT)
    return json.loads(r.stdout)


def read_proxy_header(reader):
    """A v1 line or a v2 header from a buffered reader of the connection."""
    first = reader.read(16)
    if first.startswith(V2_SIG):
        return first + reader.read(int.from_bytes(first[14:16], "big"))
    return first + reader.readline(108 - len(first))


class ProtoServer(_Server):
    """Answers the benchmark's requests; records headers and requests per connection.

    behave: "ok" answers as the protocol says; "silent" never answers; "hangup"
    closes instead of answering; "wrong" answers with altered bytes; "extra"
    sends one byte more than asked for.
    """

    def __init__(self, proxy=True, behave="ok"):
        self.proxy, self.behave = proxy, behave
        super().__init__()

    def handle(self, conn, record):
        record["requests"] = []
        reader = conn.makefile("rb")   # read(n): n bytes, or fewer at EOF
        if self.proxy:
            record["header"] = read_proxy_header(reader)
        while True:
            head = reader.read(HEAD_LEN)
            if len(head) < HEAD_LEN:
                record["eof"] = True
                return
            assert head[:3] == b"NPB", head
            op, body_len = chr(head[3]), int.from_bytes(head[4:8], "big")
            resp_len, flags = int.from_bytes(head[8:12], "big"), head[12]
            body = reader.read(body_len)
            assert body == pattern(0, body_len)
            record["requests"].append((op, body_len, resp_len, flags))
            if self.behave == "silent":
                conn.settimeout(TIMEOUT)
                reader.read(1)    # until the client gives up
                return
            if self.behave == "hangup":
                return
            answer = body if op == "E" else pattern(0, resp_len)
            if self.behave == "wrong":
                answer = bytes([answer[0] ^ 0xFF]) + answer[1:]
            if self.behave == "extra":
                answer += b"!"
            conn.sendall(answer)
            if flags & 1:
                return

    def connections(self):
        with self.lock:
            return list(self.records)

    def all_requests(self):
        return [r for rec in self.connections() for r in rec.get("requests", [])]


@pytest.fixture
def proto():
    servers = []

    def make(**kw):
        s = ProtoServer(**kw)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()


class Serve:
    """`netproxy-bench serve -j` on kernel-chosen ports: one plain, one PROXY."""

    def __init__(self, *extra):
        self.proc = subprocess.Popen(
            [tool("netproxy-bench"), "serve", "-j", "-d", "120", "-l", "127.0.0.1:0",
             "-p", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        line = self.proc.stderr.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+), 127\.0\.0\.1:(\d+) \(PROXY", line)
        if not m:
            stop_pid(self.proc)
            raise AssertionError(f"serve did not start: {line!r}")
        self.port, self.proxy_port = int(m.group(1)), int(m.group(2))

    def stop(self):
        """SIGTERM, and the counts it prints."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=TIMEOUT)
        return json.loads(out)


@pytest.fixture
def serve():
    s = Serve()
    yield s
    stop_pid(s.proc)


# --- options -----------------------------------------------------------------


def test_help_and_version():
    r = subprocess.run([tool("netproxy-bench"), "--help"], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0
    for word in ("conn", "kept", "up", "down", "idle", "--bind", "--claim-src", "serve"):
        assert word in r.stdout
    r = subprocess.run([tool("netproxy-bench"), "--version"], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0 and r.stdout.startswith("netproxy-bench ")
    r = subprocess.run([tool("netproxy-bench"), "serve", "--help"], capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and "--listen-proxy" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["-m", "fast", "127.0.0.1", "9"], "-m: not conn, kept, up, down or idle"),
    (["-n", "0", "127.0.0.1", "9"], "-n: not a count"),
    (["-n", "12x", "127.0.0.1", "9"], "-n: not a count"),
    (["-d", "-1", "127.0.0.1", "9"], "-d: not a number of seconds"),
    (["-c", "0", "127.0.0.1", "9"], "-c: not a number"),
    (["--header", "v3", "127.0.0.1", "9"], "--header: not v1, v2 or none"),
    (["--request-size", "8", "127.0.0.1", "9"], "--request-size"),
    (["-m", "up", "--rate", "100", "127.0.0.1", "9"], "--rate is for conn and kept"),
    (["--echo", "--response-size", "10", "127.0.0.1", "9"], "--echo answers"),
    (["-m", "up", "--request-size", "100", "127.0.0.1", "9"], "are for conn, kept and idle"),
    (["--verify", "127.0.0.1", "9"], "--verify is for down"),
    (["-t", "4", "-c", "2", "127.0.0.1", "9"], "more threads (4) than connections (-c 2)"),
    (["--bind", "127.0.0.9-127.0.0.2", "127.0.0.1", "9"], "--bind"),
    (["--bind", "::1", "127.0.0.1", "9"], "not of the target's address family"),
    (["--claim-src", "127.0.0.5", "--header", "none", "127.0.0.1", "9"], "needs a header"),
    (["127.0.0.1"], "HOST and PORT are required"),
    (["127.0.0.1", "0"], "PORT: not a number from 1 to 65535"),
    (["serve"], "give at least one -l or -p"),
    (["serve", "-l", "127.0.0.1"], "-l: not ADDR:PORT"),
])
def test_usage_errors(args, message):
    r = subprocess.run([tool("netproxy-bench"), *args], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == EXIT_USAGE, r.stderr
    assert message in r.stderr
    assert "--help" in r.stderr


def test_unknown_host_is_a_clear_error():
    code, report, err = bench("no-such-host.invalid", 80)
    assert code == EXIT_FAIL and report is None
    assert err.startswith("netproxy-bench: no-such-host.invalid: ")


def test_descriptor_limit_is_checked_before_starting():
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    code, report, err = bench("-m", "idle", "-n", 1000, "127.0.0.1", 9, preexec_fn=low_limit)
    assert code == EXIT_FAIL and report is None
    assert "needs 1016 file descriptors, but the limit is 256" in err


# --- headers -------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_header_tells_the_truth(proto, version):
    s = proto()
    code, report, err = bench("-m", "kept", "-c", 1, "-n", 3, "--header", version,
                              "127.0.0.1", s.port)
    assert code == 0, err
    (conn,) = s.connections()
    h = dump(conn["header"])
    assert h["result"] == "ok" and h["version"] == int(version[1])
    assert (h["src"], h["src_port"]) == conn["peer"]
    assert (h["dst"], h["dst_port"]) == ("127.0.0.1", s.port)
    assert h["data_len"] == 0          # the request came after the header, not in it


def test_no_header(proto):
    s = proto(proxy=False)
    code, report, _ = bench("-m", "kept", "-c", 2, "-n", 10, "--header", "none",
                            "127.0.0.1", s.port)
    assert code == 0 and report["header"] == "none"
    assert len(s.all_requests()) == 12


def test_claimed_source_keeps_the_real_port(proto):
    s = proto()
    code, _, err = bench("-m", "conn", "-c", 1, "-n", 4, "--claim-src", "127.1.0.7",
                         "127.0.0.1", s.port)
    assert code == 0, err
    for conn in s.connections():
        h = dump(conn["header"])
        assert (h["src"], h["src_port"]) == ("127.1.0.7", conn["peer"][1])


def test_bind_range_is_used_in_turn(proto):
    s = proto()
    code, _, err = bench("-m", "conn", "-c", 3, "-n", 30, "-b", "127.0.0.2-127.0.0.4",
                         "--claim-src", "127.1.0.2-127.1.0.4", "127.0.0.1", s.port)
    assert code == 0, err
    peers, claims = {}, set()
    for conn in s.connections():
        peers[conn["peer"][0]] = peers.get(conn["peer"][0], 0) + 1
        h = dump(conn["header"])
        claims.add((conn["peer"][0], h["src"]))
    assert peers == {"127.0.0.2": 10, "127.0.0.3": 10, "127.0.0.4": 10}
    # The i-th claimed address goes with the i-th real one.
    assert claims == {("127.0.0.2", "127.1.0.2"), ("127.0.0.3", "127.1.0.3"),
                      ("127.0.0.4", "127.1.0.4")}


# --- counts and bounds ----------------------------------------------------------


def test_kept_counts_every_request_once(proto):
    s = proto()
    code, report, err = bench("-m", "kept", "-c", 4, "-t", 2, "-n", 500, "127.0.0.1", s.port)
    assert code == 0, err
    assert report["stop"] == "count"
    assert report["completed"] == 500 and report["latency_us"]["samples"] == 500
    assert report["established"] == 4 and report["in_flight_at_stop"] == 0
    conns = s.connections()
    assert len(conns) == 4
    # One warm-up round trip per connection, then the 500 counted ones.
    requests = s.all_requests()
    assert len(requests) == 504
    assert set(requests) == {("R", 48, 64, 0)}
    assert report["bytes_sent"] == 4 * V2_IPV4_LEN + 504 * 64
    assert report["bytes_received"] == 504 * 64
    lat = report["latency_us"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]


def test_conn_opens_one_connection_per_request(proto):
    s = proto()
    code, report, err = bench("-m", "conn", "-c", 8, "-n", 100, "127.0.0.1", s.port)
    assert code == 0, err
    assert report["stop"] == "count" and report["completed"] == 100
    conns = s.connections()
    assert len(conns) == 100
    # Each asks the server to close after its response.
    assert all(c["requests"] == [("R", 48, 64, 1)] for c in conns)


def test_sizes_are_as_asked(proto):
    s = proto()
    code, report, err = bench("-m", "kept", "-c", 1, "-n", 10, "--request-size", "1000",
                              "--response-size", "5k", "127.0.0.1", s.port)
    assert code == 0, err
    assert set(s.all_requests()) == {("R", 984, 5120, 0)}
    assert report["bytes_received"] == 11 * 5120


def test_echo_is_checked_byte_for_byte(proto):
    s = proto()
    code, report, err = bench("-m", "kept", "-c", 2, "-n", 20, "--echo",
                              "--request-size", "3000", "127.0.0.1", s.port)
    assert code == 0, err
    assert set(s.all_requests()) == {("E", 2984, 2984, 0)}


def test_time_bounds_a_run_whose_count_is_out_of_reach(serve):
    code, report, err = bench("-m", "kept", "-c", 4, "-n", "1G", "-d", "0.5",
                              "127.0.0.1", serve.proxy_port)
    assert code == 0, err
    assert report["stop"] == "time"
    assert 0 < report["completed"] < 10**9
    assert report["in_flight_at_stop"] <= 4


def test_idle_holds_until_a_signal(proto):
    s = proto()
    p = subprocess.Popen([tool("netproxy-bench"), "--json", "-m", "idle", "-n", "200",
                          "-c", "50", "-d", "60", "127.0.0.1", str(s.port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert "idle: 200 of 200 connections established" in line, line
        conns = s.connections()
        assert len(conns) == 200
        # Each sent its header and made one round trip before the line.
        assert all(len(c["requests"]) == 1 and c["header"].startswith(V2_SIG) for c in conns)
        assert not any(c["eof"] for c in conns)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=TIMEOUT)
    finally:
        stop_pid(p)
    report = json.loads(out)
    assert p.returncode == 0
    assert report["stop"] == "signal" and report["established"] == 200
    wait_for(lambda: all(c["eof"] for c in s.connections()), TIMEOUT, "the connections to close")


def test_idle_ends_at_the_time_limit(proto):
    s = proto()
    code, report, err = bench("-m", "idle", "-n", 10, "-d", "0.3", "127.0.0.1", s.port)
    assert code == 0, err
    assert report["stop"] == "time" and report["established"] == 10


# --- errors, by kind -------------------------------------------------------------


def test_refused():
    code, report, _ = bench("-m", "conn", "-c", 2, "-n", 5, "127.0.0.1", free_port())
    assert code == EXIT_FAIL
    assert report["errors"]["refused"] == 5 and report["errors"]["total"] == 5
    assert report["completed"] == 0


def test_error_limit_stops_the_run():
    code, report, _ = bench("-m", "conn", "-c", 1, "-n", 1000, "--max-errors", 10,
                            "127.0.0.1", free_port())
    assert code == EXIT_FAIL
    assert report["stop"] == "errors" and report["errors"]["total"] == 10


def test_timeout(proto):
    s = proto(behave="silent")
    code, report, _ = bench("-m", "conn", "-c", 1, "-n", 2, "-w", "0.3", "127.0.0.1", s.port)
    assert code == EXIT_FAIL
    assert report["errors"]["timeout"] == 2 and report["completed"] == 0


def test_short_response(proto):
    s = proto(behave="hangup")
    code, report, _ = bench("-m", "conn", "-c", 1, "-n", 3, "127.0.0.1", s.port)
    assert code == EXIT_FAIL
    assert report["errors"]["short"] == 3


@pytest.mark.parametrize("behave", ["wrong", "extra"])
def test_unexpected_bytes(proto, behave):
    s = proto(behave=behave)
    code, report, _ = bench("-m", "conn", "-c", 1, "-n", 3, "127.0.0.1", s.port)
    assert code == EXIT_FAIL
    assert report["errors"]["unexpected"] == 3


def test_kept_connection_closed_while_idle():
    """A server that closes between requests: the connection is lost, counted once."""
    class OneRequest(ProtoServer):
        def handle(self, conn, record):
            reader = conn.makefile("rb")
            read_proxy_header(reader)
            head = reader.read(HEAD_LEN)
            reader.read(int.from_bytes(head[4:8], "big"))
            conn.sendall(pattern(0, int.from_bytes(head[8:12], "big")))

    s = OneRequest()
    try:
        code, report, _ = bench("-m", "kept", "-c", 3, "-n", 100, "-d", 5, "127.0.0.1", s.port)
    finally:
        s.close()
    assert code == EXIT_FAIL
    assert report["stop"] == "no-connections"
    assert report["errors"]["total"] == 3
    # Closed while idle, or as the next request went out (the kernel answers it with a reset).
    e = report["errors"]
    assert e["closed"] + e["short"] + e["reset"] == 3


# --- the C backend ---------------------------------------------------------------


def test_serve_counts_what_it_served(serve):
    code, report, err = bench("-m", "kept", "-c", 2, "-n", 100, "127.0.0.1", serve.proxy_port)
    assert code == 0, err
    code, report, err = bench("-m", "conn", "-c", 2, "-n", 20, "--header", "none",
                              "127.0.0.1", serve.port)
    assert code == 0, err
    counts = serve.stop()
    assert serve.proc.returncode == 0
    assert counts["accepted"] == 22 and counts["proxy_headers"] == 2
    assert counts["requests"] == 102 + 20
    assert counts["errors"]["total"] == 0


def test_serve_requires_the_header_on_a_proxy_port(serve):
    code, report, _ = bench("-m", "kept", "-c", 1, "-n", 1, "--header", "none",
                            "127.0.0.1", serve.proxy_port)
    assert code == EXIT_FAIL and report["errors"]["short"] == 1
    counts = serve.stop()
    assert counts["errors"]["bad_header"] == 1 and counts["requests"] == 0


def head(op, body, resp, flags=0):
    return b"NPB" + op.encode() + body.to_bytes(4, "big") + resp.to_bytes(4, "big") + \
        bytes([flags, 0, 0, 0])


def test_serve_answers_pipelined_requests_in_order(serve):
    with socket.create_connection(("127.0.0.1", serve.port), timeout=TIMEOUT) as c:
        reader = c.makefile("rb")
        c.sendall(head("R", 0, 300000) + head("E", 5, 5) + b"hello" + head("R", 2, 3) + b"xy")
        assert reader.read(300000) == pattern(0, 300000)
        assert reader.read(5) == b"hello"
        assert reader.read(3) == pattern(0, 3)
        c.shutdown(socket.SHUT_WR)
        assert reader.read(1) == b""
    assert serve.stop()["requests"] == 3


def test_serve_answers_after_a_half_close(serve):
    with socket.create_connection(("127.0.0.1", serve.port), timeout=TIMEOUT) as c:
        c.sendall(head("R", 0, 10))
        c.shutdown(socket.SHUT_WR)
        assert c.makefile("rb").read(11) == pattern(0, 10)   # then EOF


def test_serve_rejects_a_bad_head(serve):
    with socket.create_connection(("127.0.0.1", serve.port), timeout=TIMEOUT) as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert c.recv(1) == b""
    assert serve.stop()["errors"]["bad_request"] == 1


def test_upload_is_counted_exactly(serve):
    code, report, err = bench("-m", "up", "-c", 2, "-n", "8M", "127.0.0.1", serve.proxy_port)
    assert code == 0, err
    assert report["stop"] == "count" and report["stream_bytes"] == 8 << 20
    counts = serve.stop()
    assert counts["uploads"] == 2 and counts["errors"]["total"] == 0


def test_download_is_checked(serve):
    code, report, err = bench("-m", "down", "-n", "8M", "--verify", "127.0.0.1", serve.port,
                              "--header", "none")
    assert code == 0, err
    assert report["stop"] == "count" and report["stream_bytes"] >= 8 << 20
    assert serve.stop()["downloads"] == 1


def test_serve_ends_at_its_time_limit():
    p = subprocess.run([tool("netproxy-bench"), "serve", "-l", "127.0.0.1:0", "-d", "0.2"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0
    assert "listening on 127.0.0.1:" in p.stderr and "0 connections" in p.stderr


# --- through a receiver ----------------------------------------------------------


def test_through_netproxyd_send_proxy(serve):
    port = free_port()
    config = (f'proxy_ports = {{ "127.0.0.1:{port}" }}\n'
              f'proxy_port_mappings = {{ [{port}] = "b" }}\n'
              'proxy_trusted_proxies = { "127.0.0.0/8" }\n'
              f'services = {{ b = {{ connect = "127.0.0.1:{serve.proxy_port}", '
              'send_proxy = "v2" } }\n'
              'workers = 1\n')
    with Netproxyd(config):
        code, report, err = bench("-m", "kept", "-c", 8, "-n", 2000, "-b", "127.0.0.2-127.0.0.9",
                                  "127.0.0.1", port)
        assert code == 0, err
        code, report, err = bench("-m", "conn", "-c", 8, "-n", 300, "--header", "v1",
                                  "127.0.0.1", port)
        assert code == 0, err
        assert report["completed"] == 300
        code, report, err = bench("-m", "down", "-n", "4M", "--verify", "127.0.0.1", port)
        assert code == 0, err
    counts = serve.stop()
    assert counts["proxy_headers"] == 8 + 300 + 1
    assert counts["errors"]["total"] == 0


def test_threads_share_the_work(serve):
    code, report, err = bench("-m", "conn", "-t", 3, "-c", 6, "-n", 301, "127.0.0.1",
                              serve.proxy_port)
    assert code == 0, err
    assert report["completed"] == 301
    assert serve.stop()["accepted"] == 301


def test_signal_during_a_run_reports(serve):
    p = subprocess.Popen([tool("netproxy-bench"), "--json", "-m", "kept", "-d", "60",
                          "127.0.0.1", str(serve.proxy_port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        threading.Event().wait(0.3)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=TIMEOUT)
    finally:
        stop_pid(p)
    report = json.loads(out)
    assert report["stop"] == "signal" and report["errors"]["total"] == 0


# --- the comparison harness ------------------------------------------------------


def test_bench_compare_runs_and_leaves_nothing_behind(tmp_path):
    """make bench-compare in miniature: the table comes out, and every process
    it started and its namespace are gone afterwards."""
    out = tmp_path / "compare"
    r = subprocess.run(["/usr/bin/python3", str(REPO / "bench" / "compare.py"),
                        "--build", str(build_dir()), "--only", "direct,netproxyd-plain",
                        "--modes", "conn,kept,idle", "--repeat", "1", "--seconds", "0.3",
                        "--idle-conns", "50", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    table = out.with_suffix(".md").read_text()
    assert table.strip() == r.stdout.strip()
    assert re.search(r"\| new connections \(/s\) \| direct \| [\d,]+ \|", table)
    assert re.search(r"\| CPU per new connection \(µs\) \| netproxyd plain \| [\d.]+ \|", table)
    assert re.search(r"\| RSS per idle relayed connection \(KiB\) \| netproxyd plain \|", table)
    result = json.loads(out.with_suffix(".json").read_text())
    runs = [(x["receiver"], x["mode"]) for x in result["runs"]]
    assert sorted(runs) == sorted([("direct", "conn"), ("direct", "kept"),
                                   ("netproxyd-plain", "conn"), ("netproxyd-plain", "kept"),
                                   ("netproxyd-plain", "idle")])
    assert all(x["report"]["errors"]["total"] == 0 for x in result["runs"])
    for pid in result["pids"]:
        assert not os.path.exists(f"/proc/{pid}"), f"process {pid} was left running"
    if result["namespace"]:
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=TIMEOUT).stdout
        assert result["namespace"] not in ns
