"""netproxyd between real peers: HAProxy 2.6 and curl as PROXY senders in front
of it, nginx as a PROXY-speaking backend behind it, and bulk transfers and
half-closes through it checked byte for byte.

Everything runs on loopback. Every process a test starts is a child of the
test, stopped by its PID in a ``finally`` (SIGTERM, then SIGKILL to its own
process group if it does not go within 5 s); every thread is joined with a
timeout and every socket has one. Headers the backends receive are decoded
by the built ``netproxy-dump --json``, not by a parser of this file.

HAProxy ``proxy-v2-options`` covered: ``crc32c`` and ``unique-id`` over plain
TCP, plus ``authority`` over a TLS frontend (a throw-away self-signed EC
certificate made with the openssl CLI; the client sends SNI, HAProxy passes
it as PP2_TYPE_AUTHORITY). Over plain TCP ``authority`` is configured too and
HAProxy, having no SNI, sends no AUTHORITY TLV: that is checked as well.
"""
import hashlib
import json
import os
import pwd
import random
import signal
import socket
import ssl
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from npd import (Netproxyd, Threads, find_exe, free_port, proxy_v1, proxy_v2,
                 tool, wait_for)

TIMEOUT = 10.0            # seconds: the bound on every ordinary wait
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


# --- helpers -----------------------------------------------------------------


def needs(name, package):
    return pytest.mark.skipif(find_exe(name) is None,
                              reason=f"{name} is not installed (Debian package {package})")


needs_haproxy = needs("haproxy", "haproxy")
needs_nginx = needs("nginx", "nginx-light")
needs_curl = needs("curl", "curl")


def npd_config(port, backend_port, send_proxy=None, pass_tlvs=(), crc32c=False):
    svc = f'connect = "127.0.0.1:{backend_port}"'
    if send_proxy:
        svc += f', send_proxy = "{send_proxy}"'
    if pass_tlvs:
        svc += ", pass_tlvs = { " + ", ".join(f'"{t}"' for t in pass_tlvs) + " }"
    if crc32c:
        svc += ", crc32c = true"
    return (f'proxy_ports = {{ "127.0.0.1:{port}" }}\n'
            f'proxy_port_mappings = {{ [{port}] = "svc" }}\n'
            f'services = {{ svc = {{ {svc} }} }}\n')


@contextmanager
def netproxyd(config):
    """Netproxyd, stopped even when it fails to come up (npd.Netproxyd's
    __enter__ waits for readiness, and a failure there would skip __exit__)."""
    d = Netproxyd(config, ready=None)
    try:
        d.wait_log(r"running: \d+ workers?,")
        yield d
    finally:
        d.stop()


def close_line(d, timeout=TIMEOUT, **want):
    """Wait for the one close line of the test's connection and return it parsed
    (netproxyd's own start-up lines have no conn=)."""
    d.wait_log(r" conn=\d+ .* reason=", timeout=timeout)
    lines = d.close_lines()
    assert len(lines) == 1, d.log()
    line = lines[0]
    for key, value in want.items():
        assert line.get(key) == str(value), (key, line, d.log())
    return line


def listening(port):
    """True when some socket listens on TCP port (read from /proc, so that
    checking does not open a connection the peer would see)."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


@contextmanager
def process(cmd, log_path, ports=(), what=None, timeout=TIMEOUT):
    """Run cmd (in its own session, output to log_path) until the block ends;
    wait until every port in ports listens. Stopped by PID: SIGTERM, then
    SIGKILL to its process group (its own, as the session leader)."""
    what = what or Path(cmd[0]).name
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)

    def text():
        return Path(log_path).read_text(errors="replace")
    try:
        def up():
            if proc.poll() is not None:
                raise AssertionError(f"{what} exited ({proc.returncode}):\n{text()}")
            return all(listening(p) for p in ports)
        try:
            wait_for(up, timeout, f"{what} to listen on {list(ports)}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- {what} output ---\n{text()}") from None
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        log.close()


def dump(data):
    """Decode the PROXY header at the start of data with netproxy-dump --json."""
    r = subprocess.run([tool("netproxy-dump"), "--json"], input=bytes(data[:1 << 20]),
                       capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr, bytes(data[:200]))
    return json.loads(r.stdout)


def tlvs_of(header):
    return [(t["type"], bytes.fromhex(t["hex"])) for t in header["tlvs"]]


def recv_all(sock):
    """Read until EOF (b"" or a TLS end without close_notify); socket timeouts apply."""
    got = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
        if not chunk:
            break
        got += chunk
    return bytes(got)


class OneShotServer:
    """Listens on 127.0.0.1, accepts connections in a thread and runs
    handler(conn, record) for each, in a thread of its own. Closed (and its
    threads joined, bounded) at the end of the with-block."""

    def __init__(self, handler, timeout=TIMEOUT):
        self.handler = handler
        self.timeout = timeout
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.records = []
        self.stopping = False
        self.workers = Threads()
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            record = {"peer": peer, "received": bytearray(), "eof": False, "done": False}
            self.records.append(record)
            self.workers.start(self._run, conn, record)

    def _run(self, conn, record):
        try:
            conn.settimeout(self.timeout)
            self.handler(conn, record)
        finally:
            record["done"] = True
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stopping = True
        self.acceptor.join(2)
        self.sock.close()
        # Handler errors surface here unless the test already failed.
        if exc[0] is None:
            self.workers.join(self.timeout + 2)


# --- 1. HAProxy 2.6 in front of netproxyd ----------------------------------

MARKER = b"\n--end-of-peers-test--\n"


def marker_handler(conn, record):
    """Record until MARKER ends what arrived, answer ACK, half-close, then
    read (and record) until EOF."""
    while not bytes(record["received"][-len(MARKER):]) == MARKER:
        chunk = conn.recv(65536)
        if not chunk:
            record["eof"] = True
            return
        record["received"] += chunk
    conn.sendall(b"ACK")
    conn.shutdown(socket.SHUT_WR)
    record["after"] = recv_all(conn)
    record["eof"] = True


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    """A self-signed certificate and key in one PEM file, for HAProxy's ssl bind."""
    openssl = find_exe("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: the TLS (authority) case needs it")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "crt.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=peers.test",
                    "-days", "2", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True, timeout=30)
    pem = d / "both.pem"
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    return pem


HAPROXY_CASES = {
    # id: (server line options, TLS frontend, netproxyd pass_tlvs, netproxyd crc32c)
    "send-proxy": ("send-proxy", False, (), False),
    "send-proxy-v2": ("send-proxy-v2", False, (), False),
    "v2-options-tcp": ("send-proxy-v2 proxy-v2-options authority,unique-id,crc32c",
                       False, ("UNIQUE_ID",), False),
    "v2-options-tls": ("send-proxy-v2 proxy-v2-options authority,unique-id,crc32c",
                       True, ("UNIQUE_ID", "AUTHORITY"), True),
}


@needs_haproxy
@pytest.mark.parametrize("case", list(HAPROXY_CASES))
def test_haproxy_in_front(case, request, tmp_path):
    server_opts, tls, pass_tlvs, crc32c = HAPROXY_CASES[case]
    sni = "authority.peers.test"
    fe_port, np_port = free_port(), free_port()
    pem = request.getfixturevalue("tls_cert") if tls else None
    bind = f"bind 127.0.0.1:{fe_port}" + (f" ssl crt {pem}" if tls else "")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""\
global
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 20s
    timeout server 20s
frontend fe
    {bind}
    unique-id-format "uid-%ci-%cp-%fp"
    default_backend be
backend be
    server netproxyd 127.0.0.1:{np_port} {server_opts}
""")
    payload = bytes(random.Random(case).randbytes(3000)) + b"hello through haproxy" + MARKER

    with OneShotServer(marker_handler) as backend, \
            netproxyd(npd_config(np_port, backend.port, "v2", pass_tlvs, crc32c)) as d, \
            process([find_exe("haproxy"), "-db", "-f", str(cfg)], tmp_path / "haproxy.log",
                    ports=[fe_port]):
        raw = socket.socket()
        raw.settimeout(TIMEOUT)
        try:
            raw.bind(("127.0.0.5", 0))          # a client address that is not the proxy's
            raw.connect(("127.0.0.1", fe_port))
            client_port = raw.getsockname()[1]
            if tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                sock = ctx.wrap_socket(raw, server_hostname=sni)
                sock.sendall(payload)
                reply = recv_all(sock)             # the backend's ACK, then its end
                sock.close()
            else:
                raw.sendall(payload)
                raw.shutdown(socket.SHUT_WR)
                reply = recv_all(raw)
        finally:
            raw.close()
        assert reply == b"ACK"

        line = close_line(d, service="svc", reason="done",
                          client=f"127.0.0.5:{client_port}", dst=f"127.0.0.1:{fe_port}",
                          proxy="v1" if server_opts == "send-proxy" else "v2")
        assert line["peer"].startswith("127.0.0.1:")
        wait_for(lambda: backend.records and backend.records[0]["done"], TIMEOUT,
                 "the backend to finish")

    assert len(backend.records) == 1
    rec = backend.records[0]
    got = bytes(rec["received"])
    h = dump(got)
    assert (h["result"], h["version"], h["command"], h["family"], h["transport"]) == \
        ("ok", 2, "PROXY", "INET", "STREAM"), h
    assert (h["src"], h["src_port"]) == ("127.0.0.5", client_port)
    assert (h["dst"], h["dst_port"]) == ("127.0.0.1", fe_port)
    # The application bytes follow the header, exactly as the client sent them.
    assert got[h["header_len"]:] == payload
    assert h["data_len"] == len(payload)
    assert rec.get("after") == b"" and rec["eof"]

    # HAProxy sends AUTHORITY before UNIQUE_ID; netproxyd keeps their order.
    want = []
    if "AUTHORITY" in pass_tlvs:
        want.append((0x02, sni.encode()))
    if "UNIQUE_ID" in pass_tlvs:
        want.append((0x05, f"uid-127.0.0.5-{client_port}-{fe_port}".encode()))
    assert [t for t in tlvs_of(h) if t[0] != 0x03] == want, h["tlvs"]
    # HAProxy's CRC32C is never passed on; netproxyd adds its own when asked.
    assert sum(1 for t in tlvs_of(h) if t[0] == 0x03) == (1 if crc32c else 0), h["tlvs"]
    assert h["crc32c"] == ("valid" if crc32c else None)


# --- 2. curl --haproxy-protocol through netproxyd (plain) -----------------------


@needs_curl
def test_curl_haproxy_protocol_plain():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.client_address, self.path, dict(self.headers)))
            body = f"hello {self.path}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    server.start()
    try:
        port = free_port()
        with netproxyd(npd_config(port, httpd.server_address[1])) as d:
            r = subprocess.run([find_exe("curl"), "-sS", "--haproxy-protocol", "--max-time", "10",
                                "-w", r"\n%{http_code} %{local_ip} %{local_port}",
                                f"http://127.0.0.1:{port}/through/netproxyd?x=1"],
                               capture_output=True, text=True, timeout=20)
            assert r.returncode == 0, r.stderr
            body, status = r.stdout.rsplit("\n", 1)
            code, local_ip, local_port = status.split()
            assert code == "200" and body == "hello /through/netproxyd?x=1\n"
            assert local_ip == "127.0.0.1"
            close_line(d, service="svc", reason="done", proxy="v1",
                       client=f"127.0.0.1:{local_port}", dst=f"127.0.0.1:{port}")
        # Plain mode: the server saw netproxyd's connection and an unaltered request.
        assert len(seen) == 1
        (peer_ip, _), path, headers = seen[0]
        assert peer_ip == "127.0.0.1" and path == "/through/netproxyd?x=1"
        assert headers.get("Host") == f"127.0.0.1:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        server.join(5)


# --- 3. nginx behind netproxyd, reading the re-emitted header -------------------


NGINX_CONF = """\
{user}worker_processes 1;
lock_file {tmp}/nginx.lock;
events {{ worker_connections 64; }}
http {{
    log_format peers '$remote_addr $proxy_protocol_addr:$proxy_protocol_port '
                     '$proxy_protocol_server_addr:$proxy_protocol_server_port "$request" $status';
    access_log {tmp}/access.log peers;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        location / {{
            default_type text/plain;
            return 200 "client=$proxy_protocol_addr:$proxy_protocol_port dst=$proxy_protocol_server_addr:$proxy_protocol_server_port remote=$remote_addr\\n";
        }}
    }}
}}
"""


@needs_nginx
@pytest.mark.parametrize("send_proxy", ["v1", "v2"])
def test_nginx_behind_send_proxy(send_proxy, tmp_path):
    nginx_port, np_port = free_port(), free_port()
    user = f"user {pwd.getpwuid(0).pw_name};\n" if os.geteuid() == 0 else ""
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, tmp=tmp_path, port=nginx_port))
    cmd = [find_exe("nginx"), "-p", str(tmp_path), "-c", str(conf), "-g",
           f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;"]
    with process(cmd, tmp_path / "nginx.out", ports=[nginx_port]), \
            netproxyd(npd_config(np_port, nginx_port, send_proxy)) as d:
        s = socket.create_connection(("127.0.0.1", np_port), timeout=TIMEOUT)
        try:
            s.sendall(proxy_v2("203.0.113.9", "192.0.2.1", 4242, 443)
                      + b"GET /who HTTP/1.0\r\nHost: peers.test\r\n\r\n")
            reply = recv_all(s)     # HTTP/1.0: nginx closes after the response
        finally:
            s.close()
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), reply
        assert body == b"client=203.0.113.9:4242 dst=192.0.2.1:443 remote=127.0.0.1\n"

        access = tmp_path / "access.log"
        wait_for(lambda: access.exists() and access.read_text().strip(), TIMEOUT,
                 "nginx's access log line")
        assert access.read_text().splitlines() == \
            ['127.0.0.1 203.0.113.9:4242 192.0.2.1:443 "GET /who HTTP/1.0" 200']
        close_line(d, service="svc", reason="done", proxy="v2",
                   client="203.0.113.9:4242", dst="192.0.2.1:443")
    errors = (tmp_path / "error.log").read_text() if (tmp_path / "error.log").exists() else ""
    assert "broken header" not in errors, errors


# --- 4. integrity: 1 GiB each way ---------------------------------------------

BLOCK = 4 << 20
TOTAL = 1 << 30
FIRST = 64 << 10
BULK_TIMEOUT = 60.0


def make_block(seed):
    return random.Random(seed).randbytes(BLOCK)


def send_stream(sock, block, prefix=b"", first=FIRST):
    """Send TOTAL bytes: block repeated, the first `first` of them in one
    sendall together with prefix; then half-close. Returns the sha256 sent."""
    h = hashlib.sha256()
    mv = memoryview(block)
    h.update(mv[:first])
    sock.sendall(prefix + bytes(mv[:first]))
    sent, off = first, first
    while sent < TOTAL:
        n = min(1 << 20, BLOCK - off, TOTAL - sent)
        chunk = mv[off:off + n]
        sock.sendall(chunk)
        h.update(chunk)
        sent += n
        off = (off + n) % BLOCK
    sock.shutdown(socket.SHUT_WR)
    return h.hexdigest()


def recv_stream(sock, already=b""):
    """Read until EOF; returns (count, sha256) of already + what arrived."""
    h = hashlib.sha256(already)
    n = len(already)
    buf = bytearray(1 << 20)
    mv = memoryview(buf)
    while True:
        k = sock.recv_into(buf)
        if k == 0:
            return n, h.hexdigest()
        h.update(mv[:k])
        n += k


def read_v2_header(sock):
    """Read a v2 header off sock: returns (header, bytes that came after it)."""
    got = bytearray()
    while len(got) < 16 or len(got) < 16 + int.from_bytes(got[14:16], "big"):
        chunk = sock.recv(65536)
        assert chunk, f"EOF inside the header ({bytes(got)!r})"
        got += chunk
    end = 16 + int.from_bytes(got[14:16], "big")
    return bytes(got[:end]), bytes(got[end:])


def peak_rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


STREAMS = 64             # more than a worker lends bulk buffers (NPD_BULK_MAX, 32)
STREAM_BYTES = 8 << 20   # more than the backend side's socket buffers hold


def test_more_bulk_streams_than_bulk_buffers():
    """64 uploads at once through one worker, to a backend that reads nothing
    until all are under way (its receive buffer is 64 KiB), so netproxyd ends
    up holding a full buffer for each. A direction whose read fills its
    16 KiB buffer goes on with a 1 MiB one, but a worker lends at most 32:
    the others go on with 16 KiB buffers. Every byte arrives (by hash), and
    netproxyd's peak memory grows by about the 32 MiB it may lend, not by a
    megabyte per stream (64 MiB and more without the limit)."""
    blocks = [random.Random(i).randbytes(STREAM_BYTES) for i in range(4)]
    work, results, got = Threads(), {}, {}
    gate = threading.Event()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)  # inherited
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(STREAMS)
    lsock.settimeout(BULK_TIMEOUT)

    def backend():
        conns = [lsock.accept()[0] for _ in range(STREAMS)]
        gate.wait(BULK_TIMEOUT)
        for i, c in enumerate(conns):
            work.start(lambda i=i, c=c: got.__setitem__(i, sink(c)))

    def sink(c):
        with c:
            c.settimeout(BULK_TIMEOUT)
            h = hashlib.sha256(read_v2_header(c)[1])
            while chunk := c.recv(1 << 20):
                h.update(chunk)
            c.sendall(h.hexdigest().encode())
            return h.hexdigest()

    def upload(i, port):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.settimeout(BULK_TIMEOUT)
            s.sendall(proxy_v2("198.51.100.30", "192.0.2.2", 41000 + i, 80))
            s.sendall(blocks[i % 4])
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := s.recv(256):
                reply += chunk
            results[i] = reply.decode()   # the backend's hash of what it got

    port = free_port()
    try:
        with netproxyd(npd_config(port, lsock.getsockname()[1], "v2") + "workers = 1\n") as d:
            before = peak_rss_kib(d.proc.pid)
            work.start(backend)
            for i in range(STREAMS):
                work.start(upload, i, port)
            # Until every stream is stuck (its buffers full, the backend idle):
            # netproxyd's memory stops growing.
            last, since = -1, time.monotonic()
            deadline = since + 15
            while time.monotonic() < deadline and time.monotonic() - since < 0.5:
                now = peak_rss_kib(d.proc.pid)
                if now != last:
                    last, since = now, time.monotonic()
                time.sleep(0.05)
            held = peak_rss_kib(d.proc.pid) - before
            gate.set()
            work.join(BULK_TIMEOUT)
            d.wait_log(r'reason="done"', count=STREAMS)
    finally:
        lsock.close()
    want = [hashlib.sha256(blocks[i % 4]).hexdigest() for i in range(STREAMS)]
    assert [results.get(i) for i in range(STREAMS)] == want, "a stream lost or changed bytes"
    print(f"\n{STREAMS} streams of {STREAM_BYTES >> 20} MiB held: peak RSS grew {held} KiB")
    assert (24 << 10) < held < (32 << 10) + STREAMS * 2 * 16 + (6 << 10), \
        f"peak RSS grew {held} KiB"


@pytest.mark.parametrize("send_proxy", [None, "v2"], ids=["plain", "send_proxy-v2"])
def test_integrity_one_gib_each_way(send_proxy):
    up_block, down_block = make_block(f"up-{send_proxy}"), make_block(f"down-{send_proxy}")
    result = {}
    work = Threads()
    header = (proxy_v1("198.51.100.20", "192.0.2.2", 40000, 5222) if send_proxy is None
              else proxy_v2("198.51.100.20", "192.0.2.2", 40000, 5222))

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(TIMEOUT)
    conns = []

    def backend():
        conn, _ = lsock.accept()
        conns.append(conn)
        conn.settimeout(BULK_TIMEOUT)
        already = b""
        if send_proxy:
            result["backend_header"], already = read_v2_header(conn)
        work.start(lambda: result.__setitem__("down_sent", send_stream(conn, down_block)))
        result["up_received"] = recv_stream(conn, already)

    def client(port):
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        conns.append(s)
        s.settimeout(BULK_TIMEOUT)
        work.start(lambda: result.__setitem__("up_sent", send_stream(s, up_block, header)))
        result["down_received"] = recv_stream(s)

    port = free_port()
    try:
        with netproxyd(npd_config(port, lsock.getsockname()[1], send_proxy)) as d:
            start = time.monotonic()
            work.start(backend)
            work.start(client, port)
            work.join(BULK_TIMEOUT)
            elapsed = time.monotonic() - start
            line = close_line(d, service="svc", reason="done", up=TOTAL, down=TOTAL,
                              client="198.51.100.20:40000", dst="192.0.2.2:5222")
    finally:
        for c in conns:
            c.close()
        lsock.close()

    mib = TOTAL / (1 << 20)
    print(f"\n[{send_proxy or 'plain'}] 1 GiB each way at once in {elapsed:.2f} s: "
          f"{mib / elapsed:.0f} MiB/s each way, {2 * mib / elapsed:.0f} MiB/s total "
          f"(netproxyd says duration={line['duration']})")
    assert result["up_received"] == (TOTAL, result["up_sent"])
    assert result["down_received"] == (TOTAL, result["down_sent"])
    if send_proxy:
        h = dump(result["backend_header"])
        assert (h["result"], h["version"], h["command"], h["src"], h["src_port"], h["dst"],
                h["dst_port"], h["data_len"]) == \
            ("ok", 2, "PROXY", "198.51.100.20", 40000, "192.0.2.2", 5222, 0), h
        assert result["backend_header"] == header      # no TLVs in, none passed: identical


# --- 5. half-close, both ways ---------------------------------------------------


@pytest.mark.parametrize("send_proxy", [None, "v1"], ids=["plain", "send_proxy-v1"])
def test_client_shuts_first_and_still_gets_the_late_reply(send_proxy):
    expect_header = proxy_v1("203.0.113.30", "192.0.2.3", 50000, 80) if send_proxy else b""
    request = b"request: please answer after I have finished\n" * 100

    def late_replier(conn, record):
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            record["received"] += chunk
        record["eof"] = True
        time.sleep(0.5)                                 # the client has long shut by now
        conn.sendall(b"late reply " * 10000)
        conn.shutdown(socket.SHUT_WR)

    port = free_port()
    with OneShotServer(late_replier) as backend, \
            netproxyd(npd_config(port, backend.port, send_proxy)) as d:
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        try:
            s.sendall(proxy_v2("203.0.113.30", "192.0.2.3", 50000, 80) + request)
            s.shutdown(socket.SHUT_WR)
            t0 = time.monotonic()
            reply = recv_all(s)
            waited = time.monotonic() - t0
        finally:
            s.close()
        assert reply == b"late reply " * 10000
        assert waited >= 0.4, "the reply came before the backend sent it?"
        close_line(d, reason="done", up=len(request), down=len(reply),
                   client="203.0.113.30:50000")
    rec = backend.records[0]
    assert rec["eof"] and bytes(rec["received"]) == expect_header + request


@pytest.mark.parametrize("send_proxy", [None, "v1"], ids=["plain", "send_proxy-v1"])
def test_backend_shuts_first_and_client_keeps_sending(send_proxy):
    expect_header = proxy_v1("203.0.113.31", "192.0.2.3", 50001, 80) if send_proxy else b""
    chunks = [random.Random(i).randbytes(64 << 10) for i in range(32)]   # 2 MiB in all

    def greeter(conn, record):
        conn.sendall(b"greeting, and that is all from me\n")
        conn.shutdown(socket.SHUT_WR)
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            record["received"] += chunk
        record["eof"] = True

    port = free_port()
    with OneShotServer(greeter) as backend, \
            netproxyd(npd_config(port, backend.port, send_proxy)) as d:
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        try:
            s.sendall(proxy_v2("203.0.113.31", "192.0.2.3", 50001, 80))
            assert recv_all(s) == b"greeting, and that is all from me\n"   # then EOF
            for i, chunk in enumerate(chunks):   # keep talking after the backend's EOF
                s.sendall(chunk)
                if i % 8 == 0:
                    time.sleep(0.05)
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b""
        finally:
            s.close()
        wait_for(lambda: backend.records and backend.records[0]["done"], TIMEOUT,
                 "the backend to read to the end")
        close_line(d, reason="done", up=len(b"".join(chunks)),
                   down=len(b"greeting, and that is all from me\n"))
    rec = backend.records[0]
    assert rec["eof"]
    assert bytes(rec["received"]) == expect_header + b"".join(chunks)
