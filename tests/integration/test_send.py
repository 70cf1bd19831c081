"""netproxy-send, run as a program against real sockets on 127.0.0.0/8 and ::1.

Each test starts a Server: a thread that accepts one connection and records
every recv() it makes. In "echo" mode it finds the end of the PROXY header
with header_length() below and sends back everything after it, as it
arrives; in "collect" mode it only reads, until EOF, and may then send a
reply. What the server received is checked twice: by decode() below, a
parser independent of the library, and by the built netproxy-dump --json.
"""

import ipaddress
import json
import os
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TIMEOUT = 10          # seconds: every subprocess and socket wait is bounded by it
EXIT_USAGE = 64
V2_SIG = b"\r\n\r\n\0\r\nQUIT\n"


@pytest.fixture(scope="session")
def send_path():
    """The netproxy-send binary under test."""
    path = Path(os.environ.get("NETPROXY_BUILD") or REPO / "build") / "netproxy-send"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is not an executable: build it first "
                    f"(make, or set NETPROXY_BUILD)", pytrace=False)
    return path


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(),
                                reason="no IPv6 loopback (::1) on this host")


# --- the test server ---------------------------------------------------------


def header_length(buf):
    """The length of the PROXY header at the start of buf, or None while incomplete."""
    if buf[:1] == b"\r":
        if len(buf) < 16:
            return None
        n = 16 + int.from_bytes(buf[14:16], "big")
        return n if len(buf) >= n else None
    i = buf.find(b"\r\n")
    return i + 2 if i >= 0 else None


class Server:
    """One connection on host, port chosen by the kernel; see the module's doc."""

    def __init__(self, host="127.0.0.1", mode="echo", reply=b""):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.mode, self.reply = mode, reply
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(1)
        self.sock.settimeout(TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.reads = []            # every recv() result, in order
        self.peer = self.local = None
        self.header_len = None     # echo mode: where the application data began
        self.eof = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            conn, peer = self.sock.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                self.peer, self.local = peer[:2], conn.getsockname()[:2]
                pending = b""
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    self.reads.append(data)
                    if self.mode != "echo":
                        continue
                    if self.header_len is None:
                        pending += data
                        self.header_len = header_length(pending)
                        if self.header_len is not None:
                            conn.sendall(pending[self.header_len:])
                    else:
                        conn.sendall(data)
                self.eof.set()
                if self.reply:
                    conn.sendall(self.reply)
        except Exception as e:  # reported by join()
            self.error = e
        finally:
            self.sock.close()

    def join(self):
        # Longer than the server's own socket timeouts, which start earlier:
        # a server that waited in vain must have given up by then.
        self.thread.join(TIMEOUT + 5)
        assert not self.thread.is_alive(), "the test server did not finish"
        if self.error:
            raise self.error

    @property
    def received(self):
        return b"".join(self.reads)

    def header(self):
        n = header_length(self.received)
        assert n is not None, self.received
        return self.received[:n]


def run_send(send_path, *args, stdin=b""):
    return subprocess.run([str(send_path), *map(str, args)], input=stdin,
                          capture_output=True, timeout=TIMEOUT)


def exchange(send_path, *args, host="127.0.0.1", stdin=b"", mode="echo"):
    """Run netproxy-send against a fresh Server; both are finished on return."""
    srv = Server(host, mode=mode)
    proc = run_send(send_path, *args, host, srv.port, stdin=stdin)
    srv.join()
    assert proc.returncode == 0, proc.stderr
    return srv, proc


def dump(dump_path, header):
    proc = subprocess.run([str(dump_path), "--json"], input=header,
                          capture_output=True, timeout=TIMEOUT)
    return json.loads(proc.stdout)


def decode(header):
    """(version, src ip, src port, dst ip, dst port) of a TCP4/6 or v2 INET/INET6 PROXY header."""
    if header.startswith(b"PROXY "):
        proto, s, d, sp, dp = header[6:-2].decode("ascii").split(" ")
        assert proto in ("TCP4", "TCP6")
        return 1, ipaddress.ip_address(s), int(sp), ipaddress.ip_address(d), int(dp)
    assert header.startswith(V2_SIG) and header[12] == 0x21, header
    size = {0x11: 4, 0x21: 16}[header[13]]
    a = header[16:16 + 2 * size + 4]
    ip = ipaddress.ip_address
    return (2, ip(a[:size]), int.from_bytes(a[2 * size:2 * size + 2], "big"),
            ip(a[size:2 * size]), int.from_bytes(a[2 * size + 2:], "big"))


def free_port_refusing():
    """A bound socket that does not listen: connecting to its port is refused."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s


# --- the header's addresses --------------------------------------------------


CLAIMS = {
    4: ("192.0.2.1:5000", "198.51.100.2:443", "192.0.2.1", "198.51.100.2"),
    6: ("[2001:db8::1]:5000", "[2001:db8:0:0:1::2]:443", "2001:db8::1", "2001:db8::1:0:0:2"),
}


def check_claim(dump_path, srv, version, claim):
    _, _, src, dst = CLAIMS[claim]
    header = srv.header()
    assert decode(header) == (version, ipaddress.ip_address(src), 5000,
                              ipaddress.ip_address(dst), 443)
    out = dump(dump_path, header)
    assert out["result"] == "ok" and out["version"] == version
    assert (out["command"], out["family"]) == ("PROXY", "INET" if claim == 4 else "INET6")
    assert (out["src"], out["src_port"], out["dst"], out["dst_port"]) == (src, 5000, dst, 443)
    if version == 1:
        assert out["v1_proto"] == ("TCP4" if claim == 4 else "TCP6")


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("claim", [4, 6])
def test_src_dst_over_ipv4(send_path, dump_path, version, claim):
    """The claimed addresses need not be of the connection's family."""
    s, d, _, _ = CLAIMS[claim]
    srv, _ = exchange(send_path, f"-{version}", "-s", s, "--dst", d)
    check_claim(dump_path, srv, version, claim)


@needs_ipv6
@pytest.mark.parametrize("version", [1, 2])
def test_src_dst_over_ipv6(send_path, dump_path, version):
    s, d, _, _ = CLAIMS[6]
    srv, _ = exchange(send_path, "--v1" if version == 1 else "--v2", "--src", s, "-d", d,
                      host="::1")
    check_claim(dump_path, srv, version, 6)


def check_truthful(dump_path, srv, version):
    header = srv.header()
    ip = ipaddress.ip_address
    assert decode(header) == (version, ip(srv.peer[0]), srv.peer[1],
                              ip(srv.local[0]), srv.local[1])
    out = dump(dump_path, header)
    assert out["result"] == "ok" and out["command"] == "PROXY"
    assert (ip(out["src"]), out["src_port"]) == (ip(srv.peer[0]), srv.peer[1])
    assert (ip(out["dst"]), out["dst_port"]) == (ip(srv.local[0]), srv.local[1])


@pytest.mark.parametrize("version", [1, 2])
def test_default_addresses_are_the_sockets(send_path, dump_path, version):
    srv, _ = exchange(send_path, f"-{version}")
    assert srv.peer[0] == "127.0.0.1"
    check_truthful(dump_path, srv, version)


@needs_ipv6
@pytest.mark.parametrize("version", [1, 2])
def test_default_addresses_ipv6(send_path, dump_path, version):
    srv, _ = exchange(send_path, f"-{version}", host="::1")
    assert srv.peer[0] == "::1"
    check_truthful(dump_path, srv, version)


def test_default_is_v2(send_path, dump_path):
    srv, _ = exchange(send_path)
    assert srv.header().startswith(V2_SIG)
    assert dump(dump_path, srv.header())["version"] == 2


def test_one_given_the_other_from_the_socket(send_path, dump_path):
    srv, _ = exchange(send_path, "-s", "192.0.2.7:1234")
    out = dump(dump_path, srv.header())
    assert (out["src"], out["src_port"]) == ("192.0.2.7", 1234)
    assert (out["dst"], out["dst_port"]) == tuple(srv.local)


def run_refused_after_connect(send_path, *args):
    """Run netproxy-send against a bare listener, for an error it can only
    find once connected: it must exit 64 having sent nothing. It may exit
    before its handshake completes, so the listener may or may not see a
    connection; only that no byte arrives counts."""
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(4)
        proc = run_send(send_path, *args, "127.0.0.1", lsock.getsockname()[1])
        assert proc.returncode == EXIT_USAGE, proc.stderr
        lsock.settimeout(0.5)
        try:
            conn, _ = lsock.accept()
        except socket.timeout:
            return proc
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                assert conn.recv(65536) == b""  # nothing half-built was sent
            except ConnectionResetError:
                pass
    return proc


def test_one_given_of_another_family_is_a_usage_error(send_path):
    proc = run_refused_after_connect(send_path, "-s", "[2001:db8::1]:1")
    assert "--dst" in proc.stderr.decode()


def test_bind_sets_the_client_address(send_path, dump_path):
    srv, _ = exchange(send_path, "--bind", "127.0.0.5")
    assert srv.peer[0] == "127.0.0.5"
    out = dump(dump_path, srv.header())
    assert out["src"] == "127.0.0.5" and out["src_port"] == srv.peer[1]


# --- LOCAL, TLVs, CRC32C -----------------------------------------------------


def test_local_v2(send_path, dump_path):
    srv, _ = exchange(send_path, "--local")
    header = srv.header()
    assert header == V2_SIG + bytes([0x20, 0x00, 0, 0])
    out = dump(dump_path, header)
    assert (out["command"], out["family"], out["src"]) == ("LOCAL", "UNSPEC", None)


def test_local_v1(send_path, dump_path):
    srv, _ = exchange(send_path, "-1", "--local")
    assert srv.header() == b"PROXY UNKNOWN\r\n"
    assert dump(dump_path, srv.header())["v1_proto"] == "UNKNOWN"


def test_tlvs_text_and_hex(send_path, dump_path):
    srv, _ = exchange(send_path, "--tlv", "AUTHORITY=example.com", "--tlv", "0xE0=0x0102ff",
                      "--tlv", "5=abc", "--tlv", "noop=", "--tlv", "alpn=0X6832",
                      "--tlv", "234=0x")
    out = dump(dump_path, srv.header())
    assert out["result"] == "ok" and out["crc32c"] is None
    assert [(t["type"], t["hex"]) for t in out["tlvs"]] == [
        (0x02, b"example.com".hex()), (0xE0, "0102ff"), (0x05, b"abc".hex()),
        (0x04, ""), (0x01, b"h2".hex()), (0xEA, "")]


def test_crc32c(send_path, dump_path):
    srv, _ = exchange(send_path, "--crc32c", "--tlv", "UNIQUE_ID=0x00112233")
    out = dump(dump_path, srv.header())
    assert out["result"] == "ok" and out["crc32c"] == "valid"
    assert [t["type"] for t in out["tlvs"]] == [0x03, 0x05]
    assert out["tlvs"][1]["hex"] == "00112233"


def test_crc32c_with_local(send_path, dump_path):
    srv, _ = exchange(send_path, "--local", "--crc32c")
    out = dump(dump_path, srv.header())
    assert (out["command"], out["crc32c"]) == ("LOCAL", "valid")


def test_explicit_crc32c_tlv_goes_out_as_given(send_path, dump_path):
    """Without --crc32c a CRC32C TLV is not filled in: a wrong sum, for testing receivers."""
    srv, _ = exchange(send_path, "--tlv", "CRC32C=0xdeadbeef")
    out = dump(dump_path, srv.header())
    assert out == {"result": "error", "error": "NP_ECRC", "message": out["message"]}


# --- raw bytes and segmentation ---------------------------------------------


def test_raw_hex_arrives_exactly(send_path):
    raw = "0d0a0d0a000d0a515549540a 2f11 000c 7f000001"   # a bad command, cut short
    srv, _ = exchange(send_path, "--raw-hex", raw, stdin=b"payload", mode="collect")
    assert srv.received == bytes.fromhex(raw.replace(" ", "")) + b"payload"


def test_raw_hex_v1_garbage(send_path):
    srv, _ = exchange(send_path, "--raw-hex", "50524f585920544350342e2e2e0a", mode="collect")
    assert srv.received == b"PROXY TCP4...\n"


def test_header_in_one_write(send_path):
    srv, _ = exchange(send_path, "--tlv", "NOOP=" + "x" * 3000, stdin=b"data", mode="collect")
    header = srv.header()
    assert len(header) > 3000
    assert srv.reads[0].startswith(header)
    assert srv.received == header + b"data"


def header_reads(srv, n):
    """How many recv() calls the first n bytes took."""
    seen = 0
    for i, chunk in enumerate(srv.reads):
        seen += len(chunk)
        if seen >= n:
            return i + 1
    raise AssertionError(f"only {seen} of {n} bytes arrived")


def test_split_segments_the_header(send_path, dump_path):
    srv, _ = exchange(send_path, "--split", "5", "--split-delay", "40", "--tlv", "ALPN=h2",
                      stdin=b"after", mode="collect")
    header = srv.header()
    assert header_reads(srv, len(header)) >= 2
    out = dump(dump_path, header)
    assert out["result"] == "ok" and out["tlvs"] == [{"type": 1, "hex": "6832"}]
    assert srv.received == header + b"after"


def test_split_v1_default_delay(send_path, dump_path):
    srv, _ = exchange(send_path, "-1", "--split", "10", mode="collect")
    header = srv.header()
    assert header_reads(srv, len(header)) >= 2
    assert dump(dump_path, header)["v1_proto"] == "TCP4"


def test_split_raw_hex(send_path):
    raw = bytes(range(40))
    srv, _ = exchange(send_path, "--raw-hex", raw.hex(), "--split", "7", mode="collect")
    assert srv.received == raw
    assert header_reads(srv, len(raw)) >= 2


# --- relaying ----------------------------------------------------------------


def test_echo_one_mebibyte(send_path):
    data = os.urandom(1 << 20)
    srv, proc = exchange(send_path, "-q", stdin=data)
    assert srv.received[srv.header_len:] == data
    assert len(proc.stdout) == len(data) and proc.stdout == data
    assert proc.stderr == b""


def test_no_input(send_path):
    srv, proc = exchange(send_path, "-q")
    assert proc.stdout == b""
    assert srv.received == srv.header()


def test_half_close(send_path):
    """stdin's end shuts down the write side only: the reply still arrives."""
    srv = Server(mode="collect", reply=b"reply after EOF\n")
    proc = subprocess.Popen([str(send_path), "-q", "127.0.0.1", str(srv.port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"first part\n")
        proc.stdin.flush()
        deadline = time.monotonic() + TIMEOUT
        while not srv.received.endswith(b"first part\n"):
            assert time.monotonic() < deadline, srv.received
            time.sleep(0.01)
        time.sleep(0.2)
        assert not srv.eof.is_set()  # stdin is still open: no EOF yet
        proc.stdin.close()
        assert srv.eof.wait(TIMEOUT)
        assert proc.wait(TIMEOUT) == 0
        assert proc.stdout.read() == b"reply after EOF\n"
        assert proc.stderr.read() == b""
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()
        proc.stderr.close()
    srv.join()
    assert srv.received == srv.header() + b"first part\n"


def test_idle_timeout(send_path):
    srv = Server(mode="collect")
    proc = subprocess.Popen([str(send_path), "-q", "-w", "0.3", "127.0.0.1", str(srv.port)],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        start = time.monotonic()
        assert proc.wait(TIMEOUT) == 1
        assert time.monotonic() - start >= 0.25
        assert b"timed out" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
        proc.stdin.close()
        proc.stderr.close()
    srv.join()


# --- messages and exit status ------------------------------------------------


def test_reports_what_it_sent(send_path):
    srv, proc = exchange(send_path, "-s", "192.0.2.1:5000", "-d", "198.51.100.2:80")
    err = proc.stderr.decode()
    assert f"connected to 127.0.0.1:{srv.port} from 127.0.0.1:{srv.peer[1]}" in err
    assert "PROXY 192.0.2.1:5000 -> 198.51.100.2:80" in err


def test_host_name(send_path):
    try:
        socket.getaddrinfo("localhost", None)
    except socket.gaierror:
        pytest.skip("'localhost' does not resolve here")
    srv = Server()
    proc = run_send(send_path, "-q", "localhost", srv.port)
    srv.join()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""  # a refused ::1 before 127.0.0.1 is not reported with -q


def test_connection_refused(send_path):
    with free_port_refusing() as s:
        port = s.getsockname()[1]
        proc = run_send(send_path, "127.0.0.1", port)
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert proc.stderr.decode() == \
        f"netproxy-send: connect 127.0.0.1:{port}: Connection refused\n"


def test_connect_timeout(send_path):
    """A listener whose accept queue is full drops the SYN: -w bounds the wait."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lsn:
        lsn.bind(("127.0.0.1", 0))
        lsn.listen(0)
        port = lsn.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                fillers.append(c)
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", port))
            # The queue is full once one filler is connected (a loaded machine
            # may take longer than a moment): only then does a SYN get dropped.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                _, ready, _ = select.select([], fillers, [], 0.1)
                if any(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for c in ready):
                    break
            time.sleep(0.2)
            start = time.monotonic()
            proc = run_send(send_path, "-w", "0.5", "127.0.0.1", port)
            elapsed = time.monotonic() - start
        finally:
            for c in fillers:
                c.close()
    assert proc.returncode == 1
    assert proc.stderr.decode() == \
        f"netproxy-send: connect 127.0.0.1:{port}: Connection timed out\n"
    assert 0.45 <= elapsed < 5


def test_tlvs_too_big_for_the_address_block(send_path):
    """65530 bytes of TLV fit a LOCAL header but not one with an IPv4 block.
    That is found once connected (the block's family is the connection's),
    and nothing is sent."""
    proc = run_refused_after_connect(send_path, "--tlv", "NOOP=" + "a" * 65530)
    assert "65535" in proc.stderr.decode()


def test_unknown_host(send_path):
    proc = run_send(send_path, "no-such-host.invalid", 80)
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith("netproxy-send: no-such-host.invalid: ")


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(send_path, flag):
    proc = run_send(send_path, flag)
    assert proc.returncode == 0 and proc.stderr == b""
    out = proc.stdout.decode()
    for opt in ("--v1", "--v2", "--src", "--dst", "--local", "--tlv", "--crc32c", "--raw-hex",
                "--split", "--split-delay", "--bind", "--timeout", "--quiet", "--version"):
        assert opt in out, opt
    for status in ("0", "1", "64"):
        assert f"  {status}  " in out


def test_version(send_path):
    proc = run_send(send_path, "--version")
    assert proc.returncode == 0
    assert proc.stdout.decode().startswith("netproxy-send ")
    assert proc.stdout.split()[1][:1].isdigit()


@pytest.mark.parametrize("args", [
    [], ["HOST"], ["--bogus"], ["-x"], ["-1", "-2"], ["--extra-arg"],
    ["-s", "192.0.2.1"], ["-s", "2001:db8::1:80"], ["-s", "[192.0.2.1]:80"],
    ["-d", "192.0.2.1:65536"], ["-d", "[::1]80"], ["-s", "host.example:80"],
    ["--tlv", "ALPN"], ["--tlv", "NOSUCH=x"], ["--tlv", "256=x"], ["--tlv", "0x100=x"],
    ["--tlv", "=x"], ["--tlv", "ALPN=0xabc"], ["--tlv", "ALPN=0xzz"],
    ["-1", "--tlv", "ALPN=h2"], ["-1", "--crc32c"],
    ["--crc32c", "--tlv", "CRC32C=0x00"], ["--crc32c", "--tlv", "3=0x00000000",
                                           "--tlv", "3=0x00000000"],
    ["--tlv", "NOOP=0x" + "00" * 40000, "--tlv", "NOOP=0x" + "00" * 30000],
    ["--local", "-s", "192.0.2.1:1"], ["--raw-hex", "zz"], ["--raw-hex", "0d0"],
    ["--raw-hex", "00", "-1"], ["--raw-hex", "00", "--tlv", "ALPN=x"],
    ["--split", "0"], ["--split", "x"], ["--split-delay", "5"],
    ["--split", "4", "--split-delay", "-1"],
    ["-w", "0"], ["-w", "abc"], ["-w", "1e3"], ["--timeout"],
    ["--bind", "localhost"], ["--bind", "127.0.0.1:80"],
])
def test_usage_errors(send_path, args):
    """Usage errors are found before connecting: the refused port is never tried."""
    with free_port_refusing() as s:
        port = s.getsockname()[1]
        if args == ["--extra-arg"]:
            args = ["127.0.0.1", port, "extra"]
        elif args not in ([], ["HOST"]):
            args = [*args, "127.0.0.1", port]
        proc = run_send(send_path, *args)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert proc.stdout == b""
    err = proc.stderr.decode()
    assert "netproxy-send" in err and "--help" in err
    assert "refused" not in err


@pytest.mark.parametrize("port", ["0", "65536", "http", "-1"])
def test_bad_port(send_path, port):
    proc = run_send(send_path, "127.0.0.1", port)
    assert proc.returncode == EXIT_USAGE
    assert "PORT" in proc.stderr.decode() or "option" in proc.stderr.decode()
