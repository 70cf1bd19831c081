"""netproxyd's stats listener (stats_listen): the counters in Prometheus' text
format, checked by Debian's promtool and scraped by a real Prometheus server,
and the live connections as text and JSON; a stats client that is slow,
silent or hostile harms neither the relay nor the next scrape."""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from npd import (EchoServer, Netproxyd, Threads, find_exe, free_port, proxy_v1, proxy_v2,
                 stop_pid, talk, text_of, tool, wait_for, wait_port)


def config(port, backend_port, stats, extra=""):
    return (f'proxy_ports = {{ "127.0.0.1:{port}" }}\n'
            f'proxy_port_mappings = {{ [{port}] = "svc" }}\n'
            f'services = {{ svc = {{ connect = "127.0.0.1:{backend_port}" }} }}\n'
            f'stats_listen = "{stats}"\n'
            'workers = 2\n' + extra)


def http_get(where, path, method="GET", timeout=5.0):
    """One request over a fresh connection to where ("host:port" or a UNIX
    socket path); returns (status, headers dict, body bytes), read to EOF."""
    if where.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr = where
    else:
        host, port = where.rsplit(":", 1)
        s = socket.socket(socket.AF_INET6 if host.startswith("[") else socket.AF_INET)
        addr = (host.strip("[]"), int(port))
    with s:
        s.settimeout(timeout)
        s.connect(addr)
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: netproxyd\r\n\r\n".encode())
        data = bytearray()
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return status, headers, body


def samples(text):
    """The exposition's samples: {'name{labels}': value} (labels as written)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def metrics(where):
    status, headers, body = http_get(where, "/metrics")
    assert status == 200, body
    return samples(body.decode())


@pytest.fixture
def relay():
    """netproxyd relaying port -> an echo server, with stats on a loopback port."""
    with EchoServer() as echo:
        port, stats = free_port(), f"127.0.0.1:{free_port()}"
        with Netproxyd(config(port, echo.port, stats)) as d:
            d.port, d.stats, d.echo = port, stats, echo
            wait_port(int(stats.rsplit(":", 1)[1]))
            yield d


def test_promtool_checks_the_exposition(relay):
    """Every kind of event counted at least once, then promtool's own check
    (format and naming lint) finds nothing to say."""
    assert talk(relay.port, proxy_v1("192.0.2.1", "192.0.2.2", 1000, 80) + b"ping") == \
        (b"ping", "eof")
    talk(relay.port, b"GET / HTTP/1.0\r\n\r\n")  # not a PROXY header
    wait_for(lambda: sum(v for k, v in metrics(relay.stats).items()
                         if k.startswith("netproxyd_connections_closed_total")) == 2,
             what="both connections counted closed")
    status, headers, body = http_get(relay.stats, "/metrics")
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    promtool = find_exe("promtool")
    assert promtool, "promtool missing: Debian's prometheus package (scripts/deps.sh)"
    out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                         timeout=30)
    assert out.returncode == 0 and not out.stdout and not out.stderr, \
        (out.stdout + out.stderr).decode()


def test_counts_what_happened(relay):
    """One relayed connection, one garbage header, one v2 LOCAL check: each
    lands in its series with the numbers the test made."""
    sent = b"x" * 1000
    assert talk(relay.port, proxy_v2("192.0.2.1", "192.0.2.2", 1000, 80) + sent) == \
        (sent, "eof")
    talk(relay.port, b"SSH-2.0-probe\r\n")
    talk(relay.port, proxy_v2("", "", 0, 0, command=0))
    svc = 'service="svc"'
    wait_for(lambda: metrics(relay.stats).get(
        f'netproxyd_connections_closed_total{{{svc},result="header_error"}}') == 1,
        what="the bad header counted")
    m = wait_for(lambda: (lambda m: m if m[f'netproxyd_connections_closed_total{{{svc},'
                                             f'result="done"}}'] == 2 else None)(
        metrics(relay.stats)), what="two connections done")
    assert m[f"netproxyd_connections_accepted_total{{{svc}}}"] == 3
    assert m[f"netproxyd_connections_active{{{svc}}}"] == 0
    assert m[f'netproxyd_relayed_bytes_total{{{svc},direction="up"}}'] == len(sent)
    assert m[f'netproxyd_relayed_bytes_total{{{svc},direction="down"}}'] == len(sent)
    assert m['netproxyd_headers_total{version="2",command="proxy"}'] == 1
    assert m['netproxyd_headers_total{version="2",command="local"}'] == 1
    assert m['netproxyd_header_failures_total{reason="notproxy"}'] == 1
    assert m["netproxyd_header_wait_seconds_count"] == 2
    assert m[f'netproxyd_backend_connect_seconds_bucket{{{svc},le="+Inf"}}'] == 2
    assert m["netproxyd_config_generation"] == 1
    assert m['netproxyd_build_info{version="0.1.0"}'] == 1


def test_rejected_and_timed_out_and_refused():
    """An untrusted sender, a silent client and a backend that is not there:
    each counted under its own reason or result."""
    port, dead, stats = free_port(), free_port(), f"127.0.0.1:{free_port()}"
    extra = ('proxy_trusted_proxies = { "127.0.0.1" }\n'
             'proxy_header_timeout = 1\n')
    cfg = config(port, dead, stats, extra).replace(
        f'proxy_ports = {{ "127.0.0.1:{port}" }}', f'proxy_ports = {{ "127.0.0.1:{port}", '
        f'"[::1]:{port}" }}')
    with Netproxyd(cfg):
        wait_port(int(stats.rsplit(":", 1)[1]))
        talk(port, b"", host="::1")  # untrusted: closed before a byte is read
        talk(port, proxy_v1("192.0.2.1", "192.0.2.2", 1000, 80))  # backend refuses
        with socket.create_connection(("127.0.0.1", port)) as silent:
            silent.settimeout(5)
            assert silent.recv(1) == b""  # closed at the header timeout
        svc = 'service="svc"'
        m = wait_for(lambda: (lambda m: m if m[
            f'netproxyd_connections_closed_total{{{svc},result="header_timeout"}}'] == 1
            else None)(metrics(stats)), what="the header timeout counted")
        assert m['netproxyd_rejected_connections_total{reason="untrusted"}'] == 1
        assert m[f'netproxyd_connections_closed_total{{{svc},result="backend_error"}}'] == 1
        assert m[f"netproxyd_connections_accepted_total{{{svc}}}"] == 2


def test_reload_counts_generations_and_failures():
    """A reload adds a service: its series appears beside the old one's, which
    keeps its count; a broken file counts a failure; a new stats_listen is
    for the next start, and says so."""
    with EchoServer() as echo:
        port, port2, stats = free_port(), free_port(), f"127.0.0.1:{free_port()}"
        cfg = config(port, echo.port, stats)
        with Netproxyd(cfg) as d:
            wait_port(int(stats.rsplit(":", 1)[1]))
            talk(port, proxy_v1("192.0.2.1", "192.0.2.2", 1000, 80) + b"a")
            d.reload(cfg.replace(f'"127.0.0.1:{port}" }}', f'"127.0.0.1:{port}", '
                                 f'"127.0.0.1:{port2}" }}')
                     .replace(f'[{port}] = "svc"', f'[{port}] = "svc", [{port2}] = "other"')
                     .replace("services = {", f'services = {{ other = {{ connect = '
                              f'"127.0.0.1:{echo.port}" }},')
                     .replace(stats, f"127.0.0.1:{free_port()}"))
            d.wait_log(r"reloaded: generation 2")
            d.wait_log(r"stats_listen changed to .*: takes effect at the next start "
                       rf"\(still serving on {stats}\)")
            talk(port2, proxy_v1("192.0.2.1", "192.0.2.2", 1000, 80) + b"b")
            m = wait_for(lambda: (lambda m: m if m.get(
                'netproxyd_connections_closed_total{service="other",result="done"}') == 1
                else None)(metrics(stats)), what="the new service's connection")
            assert m['netproxyd_connections_closed_total{service="svc",result="done"}'] == 1
            assert m["netproxyd_config_generation"] == 2
            d.reload("this is not Lua")
            d.wait_log(r"reload failed: keeping the running config")
            m = metrics(stats)
            assert m["netproxyd_config_reload_failures_total"] == 1
            assert m["netproxyd_config_generation"] == 2


def test_prometheus_scrapes_netproxyd(relay, tmp_path):
    """Debian's Prometheus server scrapes netproxyd every second and answers,
    through its HTTP API, a query about the connection this test made."""
    prometheus = find_exe("prometheus")
    assert prometheus, "prometheus missing: Debian's prometheus package (scripts/deps.sh)"
    assert talk(relay.port, proxy_v1("192.0.2.1", "192.0.2.2", 1000, 80) + b"hi") == \
        (b"hi", "eof")
    web = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: netproxyd\n"
        f"    static_configs:\n      - targets: ['{relay.stats}']\n")
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{web}",
         "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        query = 'netproxyd_connections_closed_total{service="svc",result="done"}'
        url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": query})

        def answered():
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    result = json.load(r)["data"]["result"]
            except OSError:
                return None  # not listening yet
            return result or None
        result = wait_for(answered, 60, "Prometheus to have scraped netproxyd")
        assert len(result) == 1
        assert result[0]["metric"]["job"] == "netproxyd"
        assert result[0]["value"][1] == "1"
    finally:
        stop_pid(proc, 10)
        log.close()


def test_connections_view(relay):
    """Connections open now, as text and JSON: who (the header's client),
    through which proxy, which service, in which state, bytes each way; a
    limit leaves the newest out and says how many."""
    held = []
    try:
        for i in range(3):
            s = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
            s.sendall(proxy_v1(f"192.0.2.{i + 1}", "192.0.2.100", 1000 + i, 80) + b"x" * (i + 1))
            assert s.recv(100) == b"x" * (i + 1)
            held.append(s)
        silent = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        held.append(silent)  # no header yet

        def four():
            _, _, body = http_get(relay.stats, "/connections.json")
            doc = json.loads(body)
            return doc if doc["total"] == 4 else None
        doc = wait_for(four, what="four connections listed")
        assert doc["shown"] == 4 and doc["omitted"] == 0 and doc["limit"] == 1000
        conns = doc["connections"]
        assert [c["id"] for c in conns] == sorted(c["id"] for c in conns)
        for i, c in enumerate(conns[:3]):
            assert c["service"] == "svc"
            assert c["client"] == f"192.0.2.{i + 1}:{1000 + i}"
            assert c["peer"] == f"127.0.0.1:{held[i].getsockname()[1]}"
            # The address the backend saw: what joins its log to this client.
            assert c["local"] == "%s:%d" % relay.echo.records[i]["peer"], c
            assert c["state"] == "relay"
            assert c["up_bytes"] == c["down_bytes"] == i + 1
            assert c["age_seconds"] >= 0
        assert conns[3]["state"] == "header" and conns[3]["client"] == conns[3]["local"] == "-"

        status, headers, body = http_get(relay.stats, "/connections")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        lines = body.decode().splitlines()
        assert lines[0] == "# id service client peer local state age_seconds up_bytes down_bytes"
        rows = [l.split() for l in lines[1:] if not l.startswith("#")]
        assert [r[2] for r in rows] == ["192.0.2.1:1000", "192.0.2.2:1001", "192.0.2.3:1002", "-"]
        assert rows[1][1] == "svc" and rows[1][5] == "relay" and rows[1][7:] == ["2", "2"]
        assert lines[-1] == "# 4 connections"

        _, _, body = http_get(relay.stats, "/connections?limit=2")
        lines = body.decode().splitlines()
        assert len([l for l in lines if not l.startswith("#")]) == 2
        assert lines[-1] == "# 2 of 4 connections shown (limit 2): 2 more not shown"
        doc = json.loads(http_get(relay.stats, "/connections.json?limit=2")[2])
        assert (doc["total"], doc["shown"], doc["omitted"]) == (4, 2, 2)
        assert http_get(relay.stats, "/connections?limit=0")[0] == 400
        assert http_get(relay.stats, "/connections?limit=x")[0] == 400
    finally:
        for s in held:
            s.close()


def test_hostile_stats_clients_harm_nothing(relay):
    """Silent clients filling every slot, an endless request line, binary
    junk and wrong methods: each gets a clean answer or close and a log line,
    while connections keep being relayed and scrapes answered."""
    host, port = relay.stats.rsplit(":", 1)
    port = int(port)
    silent = [socket.create_connection((host, port), timeout=5) for _ in range(20)]
    try:
        # More silent clients than slots: the oldest were dropped for the newer.
        assert silent[0].recv(1) == b""
        relay.wait_log(r"stats .*: client .*: dropped: 16 stats clients at once")
        assert talk(relay.port, proxy_v1("192.0.2.1", "192.0.2.2", 1000, 80) + b"ok") == \
            (b"ok", "eof")
        assert metrics(relay.stats)["netproxyd_workers"] == 2

        with socket.create_connection((host, port), timeout=5) as big:
            big.sendall(b"GET /" + b"a" * 8000)
            assert big.recv(100).startswith(b"HTTP/1.1 431 ")
        relay.wait_log(r"stats .*: client .*: request larger than 4096 bytes")
        with socket.create_connection((host, port), timeout=5) as junk:
            junk.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
            assert junk.recv(100).startswith(b"HTTP/1.1 400 ")
        assert http_get(relay.stats, "/metrics", method="POST")[0] == 405
        status, headers, body = http_get(relay.stats, "/metrics", method="HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 1000
        assert http_get(relay.stats, "/nothing")[0] == 404
        # The silent ones still held are closed at their deadline, with a line:
        # 5 s from their accept, so the wait here must be longer than 5 s.
        silent[-1].settimeout(15)
        assert silent[-1].recv(1) == b""
        relay.wait_log(r"stats .*: client .*: no complete request within 5000 ms", timeout=10)
        assert talk(relay.port, proxy_v1("192.0.2.1", "192.0.2.2", 1000, 80) + b"ok") == \
            (b"ok", "eof")
    finally:
        for s in silent:
            s.close()


def test_unix_socket_before_dropping_privileges():
    """A UNIX socket path: created before privileges go (netproxyd started as
    root becomes nobody), replacing a stale socket file of an earlier run."""
    d = tempfile.mkdtemp(prefix="npd-stats-")
    try:
        path = os.path.join(d, "stats.sock")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()  # the file stays, as after a crash
        with EchoServer() as echo:
            port = free_port()
            with Netproxyd(config(port, echo.port, path)) as npd:
                npd.wait_log(r"stats: serving /metrics and /connections on unix:" + re.escape(path))
                assert talk(port, proxy_v1("192.0.2.1", "192.0.2.2", 1000, 80) + b"u") == \
                    (b"u", "eof")
                m = wait_for(lambda: (lambda m: m if m[
                    'netproxyd_connections_closed_total{service="svc",result="done"}'] == 1
                    else None)(metrics(path)), what="the connection counted")
                assert m["netproxyd_connections_active{service=\"svc\"}"] == 0
    finally:
        for f in Path(d).iterdir():
            f.unlink()
        os.rmdir(d)


def test_config_check_and_errors(tmp_path):
    """-t names the stats listener; a wrong value is an error naming the key;
    a path that is no socket is refused at start, untouched."""
    cfg = tmp_path / "c.lua"
    cfg.write_text(config(free_port(), free_port(), "127.0.0.1:9100"))
    out = subprocess.run([tool("netproxyd"), "-t", "-c", str(cfg)], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert "stats: 127.0.0.1:9100 (/metrics, /connections; read at start only)" in out.stdout
    cfg.write_text(config(free_port(), free_port(), "x").replace('"x"', "9100"))
    out = subprocess.run([tool("netproxyd"), "-t", "-c", str(cfg)], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 1
    assert "stats_listen: expected an address such as" in out.stderr
    cfg.write_text(config(free_port(), free_port(), "0.0.0.0:9100"))
    out = subprocess.run([tool("netproxyd"), "-t", "-c", str(cfg)], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0 and "is not a loopback address" in out.stderr
    plain = tmp_path / "not-a-socket"
    plain.write_text("keep me")
    with Netproxyd(config(free_port(), free_port(), str(plain)), ready=None) as d:
        assert d.proc.wait(10) == 1
        assert "the path exists and is not a socket" in d.log()
    assert plain.read_text() == "keep me"


def read_answer(s):
    """Everything s receives to EOF; a reset is returned, not raised, so
    that a test can say what it cut."""
    data = bytearray()
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError as e:
        return bytes(data), e
    return bytes(data), None


def whole(answer):
    """Whether an answer's body has all the bytes its Content-Length says."""
    head, _, body = answer.partition(b"\r\n\r\n")
    length = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
    return bool(length) and int(length[0].split(b":")[1]) == len(body)


def test_bytes_after_the_request_do_not_reset_the_answer(relay):
    """A client that sends more than its request (a pipelined second one, a
    body) gets its whole answer: closing over unread bytes would make the
    kernel send a reset and drop the answer's tail still in flight, so the
    listener shuts its side and reads them away until the client closes."""
    host, port = relay.stats.rsplit(":", 1)
    for extra in (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 300, b"\0" * 20000):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's least
            s.settimeout(10)
            s.connect((host, int(port)))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" + extra)
            answer, reset = read_answer(s)
        assert reset is None and whole(answer), (len(answer), reset)
    assert talk(relay.port, proxy_v1("192.0.2.1", "192.0.2.2", 1000, 80) + b"ok") == \
        (b"ok", "eof")


def test_a_flood_of_idle_clients_does_not_cut_an_answer(tmp_path):
    """A scrape being answered to a slow reader keeps its slot while more
    clients than there are slots connect and say nothing: they displace
    each other, not the answer. (A UNIX socket: its send buffer, unlike
    loopback TCP's, is smaller than the answer, which is then still being
    written when the flood comes.)"""
    path = str(tmp_path / "stats.sock")
    port = free_port()
    held = []
    with Netproxyd(config(port, free_port(), path, "proxy_header_timeout = 120\n")) as d:
        try:
            for i in range(2500):  # waiting for their headers: a long list
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            wait_for(lambda: json.loads(http_get(path, "/connections.json?limit=1")[2])
                     ["total"] == 2500, what="2500 connections held")
            with socket.socket(socket.AF_UNIX) as reader:
                reader.settimeout(10)
                reader.connect(path)
                reader.sendall(b"GET /connections.json?limit=10000 HTTP/1.1\r\nHost: x\r\n\r\n")
                assert reader.recv(16).startswith(b"HTTP/1.1 200")  # being answered
                idle = []
                try:
                    for _ in range(40):
                        idle.append(socket.socket(socket.AF_UNIX))
                        idle[-1].connect(path)
                    d.wait_log(r"stats .*: client .*: dropped: 16 stats clients at once")
                    idle[0].settimeout(5)
                    assert idle[0].recv(1) == b""  # the first idle ones made room
                    answer, reset = read_answer(reader)
                finally:
                    for s in idle:
                        s.close()
            assert reset is None and whole(answer), (len(answer), reset)
            doc = json.loads(answer.partition(b"\r\n\r\n")[2])
            assert doc["total"] == 2500 and doc["shown"] == 2500
        finally:
            for s in held:
                s.close()


def test_service_names_past_62_are_other_in_every_worker():
    """Reloads that bring a new service name each time: the first 62 names
    have series of their own and every later one is "(other)", the same in
    both workers (a name is never its own series in one worker and part of
    "(other)" in the other), so a metric has at most 64 series; every
    connection is counted once, and accepted = closed + active."""
    with EchoServer() as echo:
        port, stats = free_port(), f"127.0.0.1:{free_port()}"
        cfg = config(port, echo.port, stats)
        with Netproxyd(cfg) as d:
            wait_port(int(stats.rsplit(":", 1)[1]))
            for g in range(70):
                d.reload(cfg.replace('"svc"', f'"n{g}"').replace("svc =", f"n{g} ="))
                d.wait_log(rf"reloaded: generation {g + 2}\b")
                assert talk(port, proxy_v1("192.0.2.1", "192.0.2.2", 1000, 80) + b"n") == \
                    (b"n", "eof")
            m = wait_for(lambda: (lambda m: m if sum(
                v for k, v in m.items() if k.startswith("netproxyd_connections_closed_total"))
                == 70 else None)(metrics(stats)), what="70 connections closed")
            accepted = {re.match(r'.*service="(.*)"', k).group(1): v for k, v in m.items()
                        if k.startswith("netproxyd_connections_accepted_total")}
            # "svc" had no connection, so no slot: "-", n0 to n61, "(other)".
            assert set(accepted) == {"-", "(other)"} | {f"n{g}" for g in range(62)}
            assert accepted["(other)"] == 8
            assert all(accepted[f"n{g}"] == 1 for g in range(62))
            for name, n in accepted.items():
                closed = sum(v for k, v in m.items() if k.startswith(
                    f'netproxyd_connections_closed_total{{service="{name}",'))
                assert n == closed and m[f'netproxyd_connections_active{{service="{name}"}}'] == 0


def test_connections_asked_through_reloads_and_stop():
    """/connections asked without pause while reloads wake the workers with
    other mail and while netproxyd stops: each answer is whole or the
    listener is gone, and netproxyd exits cleanly (under ThreadSanitizer:
    the stats thread read a worker's answer flag outside the lock, which
    raced with a worker answering early, woken by a reload)."""
    with EchoServer() as echo:
        port, stats = free_port(), f"127.0.0.1:{free_port()}"
        stats_port = int(stats.rsplit(":", 1)[1])
        cfg = config(port, echo.port, stats, "shutdown_grace = 1\n")
        with Netproxyd(cfg) as d:
            wait_port(stats_port)
            held = []
            for _ in range(50):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(proxy_v1("192.0.2.1", "192.0.2.2", 1000, 80))
                held.append(s)
            stop, answers, threads = threading.Event(), [], Threads()

            def ask(path):
                while not stop.is_set():
                    try:
                        with socket.create_connection(("127.0.0.1", stats_port), timeout=5) as s:
                            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                            answer, _ = read_answer(s)
                    except OSError:
                        continue  # stopped: refused
                    if answer:
                        answers.append(whole(answer))
            for path in ("/connections.json?limit=10000", "/connections"):
                threads.start(ask, path)
            try:
                for g in range(30):
                    d.reload(cfg.replace("svc", f"s{g}"))
                    d.wait_log(rf"reloaded: generation {g + 2}\b", timeout=20)
                d.proc.send_signal(signal.SIGTERM)
                assert d.proc.wait(20) == 0, d.log()[-3000:]
            finally:
                stop.set()
                threads.join(20)
                for s in held:
                    s.close()
            assert answers and all(answers)


class Frozen:
    """One thread of a child process stopped alone (ptrace's SEIZE and
    INTERRUPT stop that thread only, as a worker stuck in a long task
    would be), and let go at the end of the with block."""
    SEIZE, INTERRUPT, DETACH = 0x4206, 0x4207, 17

    def __init__(self, tid):
        import ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                     ctypes.c_void_p]
        self.tid, self.ctypes = tid, ctypes

    def __enter__(self):
        if self.libc.ptrace(self.SEIZE, self.tid, None, None) != 0:
            pytest.skip(f"ptrace: {os.strerror(self.ctypes.get_errno())}")
        assert self.libc.ptrace(self.INTERRUPT, self.tid, None, None) == 0
        os.waitpid(self.tid, 0x40000000)  # __WALL: the thread is stopped
        return self

    def __exit__(self, *exc):
        self.libc.ptrace(self.DETACH, self.tid, None, None)


def test_a_stuck_worker_does_not_hold_up_the_scrapes(relay):
    """A worker that does not answer for the list is left out after the
    1 s wait, and then not waited for again until it takes its mail: 12
    clients asking for /connections at once cost a /metrics scrape
    nothing (they cost it 12 s, one wait after the other, beyond
    Prometheus' 10 s scrape timeout); once the worker runs again it is
    in the list."""
    held = []
    try:
        for i in range(20):
            s = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
            s.sendall(proxy_v1("192.0.2.1", "192.0.2.2", 1000 + i, 80) + b"x")
            assert s.recv(1) == b"x"
            held.append(s)
        # A worker is the thread waiting in epoll (main waits for signals, the
        # stats thread in poll, ThreadSanitizer's own thread sleeps).
        tasks = Path(f"/proc/{relay.proc.pid}/task")
        worker = min(int(t.name) for t in tasks.iterdir()
                     if "epoll" in text_of(t / "wchan"))
        with Frozen(worker):
            doc = json.loads(http_get(relay.stats, "/connections.json")[2])
            assert doc["workers_not_answering"] == 1 and doc["total"] < 20
            answers, threads = [], Threads()
            for _ in range(12):
                threads.start(lambda: answers.append(
                    json.loads(http_get(relay.stats, "/connections.json", timeout=30)[2])))
            status, _, body = http_get(relay.stats, "/metrics", timeout=5)
            assert status == 200 and b"netproxyd_workers 2" in body
            threads.join(30)
            assert len(answers) == 12
            assert all(a["workers_not_answering"] == 1 for a in answers)
        doc = wait_for(lambda: (lambda d: d if d["total"] == 20 else None)(
            json.loads(http_get(relay.stats, "/connections.json")[2])),
            what="the worker back in the list")
        assert doc["workers_not_answering"] == 0
    finally:
        for s in held:
            s.close()
