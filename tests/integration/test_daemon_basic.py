"""netproxyd's basic contract: a PROXY port, mapped to a service, relays to it
with the client passed on as configured."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from npd import EchoServer, Netproxyd, free_port, proxy_v1, proxy_v2, talk, tool


def config(port, backend_port, send_proxy=None, extra=""):
    sp = f', send_proxy = "{send_proxy}"' if send_proxy else ""
    return (f'proxy_ports = {{ "127.0.0.1:{port}" }}\n'
            f'proxy_port_mappings = {{ [{port}] = "svc" }}\n'
            f'services = {{ svc = {{ connect = "127.0.0.1:{backend_port}"{sp} }} }}\n'
            + extra)


def test_check_default_config():
    out = subprocess.run([tool("netproxyd"), "-t"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert "0.0.0.0:15222 -> c2s (127.0.0.1:5222 and [::1]:5222 " in out.stdout
    assert "0.0.0.0:15269 -> s2s (127.0.0.1:5269 and [::1]:5269 " in out.stdout


# mod_net_proxy's README lines, in the global section of a Prosody config.
MODULE_LINES = """\
proxy_ports = { 15222, 15269, 15223 }
proxy_port_mappings = { [15222] = "c2s", [15269] = "s2s", [15223] = "c2s_direct_tls" }
proxy_trusted_proxies = { "127.0.0.1", "::1", "192.168.10.1" }
c2s_direct_tls_ports = { 5223 }
"""


@pytest.mark.skipif(not Path("/etc/prosody/prosody.cfg.lua").is_file(),
                    reason="Debian's prosody package is not installed")
def test_check_debian_prosody_config(tmp_path):
    """netproxyd -t -c on the prosody.cfg.lua Debian installs (its VirtualHost,
    Include "conf.d/*.cfg.lua", log table, ...) with the module's lines added:
    the table of ports, services and where each address came from."""
    shutil.copytree("/etc/prosody", tmp_path / "prosody", symlinks=True,
                    ignore=shutil.ignore_patterns("certs"))
    cfg = tmp_path / "prosody" / "prosody.cfg.lua"
    cfg.write_text(MODULE_LINES + cfg.read_text())
    out = subprocess.run([tool("netproxyd"), "-t", "-c", str(cfg)], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    lines = out.stdout.splitlines()
    # Prosody listens on "*" and "::" by default: an address per family.
    assert lines[:6] == [
        "listen 0.0.0.0:15222 -> c2s (127.0.0.1:5222 and [::1]:5222 from Prosody's defaults "
        "for c2s, plain)",
        "listen [::]:15222 -> c2s (127.0.0.1:5222 and [::1]:5222 from Prosody's defaults "
        "for c2s, plain)",
        "listen 0.0.0.0:15269 -> s2s (127.0.0.1:5269 and [::1]:5269 from Prosody's defaults "
        "for s2s, plain)",
        "listen [::]:15269 -> s2s (127.0.0.1:5269 and [::1]:5269 from Prosody's defaults "
        "for s2s, plain)",
        "listen 0.0.0.0:15223 -> c2s_direct_tls (127.0.0.1:5223 and [::1]:5223 from "
        "Prosody's c2s_direct_tls_ports and default interfaces, plain)",
        "listen [::]:15223 -> c2s_direct_tls (127.0.0.1:5223 and [::1]:5223 from "
        "Prosody's c2s_direct_tls_ports and default interfaces, plain)",
    ], out.stdout
    assert "trusted: 127.0.0.1/32 ::1/128 192.168.10.1/32" in lines
    assert re.fullmatch(r"a Prosody config: (\d+) files read, (\d+) of Prosody's own "
                        r"settings skipped", lines[-2]), lines[-2]
    assert lines[-1] == f"config {cfg} is valid"

    # A file of netproxyd's own takes Prosody's in and adds the delivery.
    own = tmp_path / "netproxyd.conf.lua"
    own.write_text(f'Include "{cfg}"\n'
                   'services = { c2s = { transparent = true }, s2s = { send_proxy = "v2" } }\n')
    out = subprocess.run([tool("netproxyd"), "-t", "-c", str(own)], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert ("listen 0.0.0.0:15222 -> c2s (127.0.0.1:5222 and [::1]:5222 from Prosody's "
            "defaults for c2s, plain, transparent)") in out.stdout.splitlines()
    assert ("listen 0.0.0.0:15269 -> s2s (127.0.0.1:5269 and [::1]:5269 from Prosody's "
            "defaults for s2s, send_proxy v2)") in out.stdout.splitlines()


@pytest.mark.parametrize("send_proxy,expect", [
    (None, b""),
    ("v1", b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n"),
    ("v2", proxy_v2("203.0.113.7", "192.0.2.1", 51234, 443)),
])
@pytest.mark.parametrize("incoming", ["v1", "v2"])
def test_relay_passes_the_client_on(send_proxy, expect, incoming):
    port = free_port()
    with EchoServer() as echo, Netproxyd(config(port, echo.port, send_proxy)) as d:
        header = (proxy_v1("203.0.113.7", "192.0.2.1", 51234, 443) if incoming == "v1"
                  else proxy_v2("203.0.113.7", "192.0.2.1", 51234, 443))
        got, how = talk(port, header + b"hello, world\n")
        assert how == "eof"
        # The backend saw the re-emitted header (or none) and then the data, unaltered.
        assert got == expect + b"hello, world\n"
        line = d.wait_log(r"conn=\d+ .*reason=\"done\"")[0].string
        assert "client=203.0.113.7:51234" in line and "dst=192.0.2.1:443" in line


def test_local_header_is_stripped_and_reemitted_as_local():
    port = free_port()
    with EchoServer() as echo, Netproxyd(config(port, echo.port, "v2")) as d:
        got, how = talk(port, proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, command=0) + b"ping")
        assert how == "eof"
        assert got == b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00ping"
        d.wait_log(r"proxy=v2-local .*reason=\"done\"")


def test_garbage_is_refused_with_a_reason():
    port = free_port()
    with EchoServer() as echo, Netproxyd(config(port, echo.port)) as d:
        got, how = talk(port, b"GET / HTTP/1.0\r\n\r\n")
        assert got == b"" and how in ("eof", "reset")
        d.wait_log(r"malformed header: .*NP_ENOTPROXY.*first bytes \[GET / HTTP/1.0")
        assert echo.records == []


def test_backend_reply_survives_its_reset():
    """A server that answers and closes while the client is still sending
    (an HTTP 413, say) resets the connection. The answer it sent before the
    reset must still reach the client in full: one side's failure never costs
    the other side a byte it was owed, and netproxyd's own close must not
    reset the client before it has read it (a lingering close)."""
    import socket
    import threading
    import time

    reply = bytes(range(256)) * 400  # 100 KiB

    def outq(sock):
        # Bytes sent but not yet acknowledged by the peer (SIOCOUTQ, tcp(7)).
        import fcntl
        import struct
        import termios
        return struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0]

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    backend_port = lsock.getsockname()[1]

    def backend():
        conn, _ = lsock.accept()
        conn.recv(1000)          # some of the upload, not all: close will reset
        conn.sendall(reply)
        # The reset discards what this socket has not sent yet: sendall()
        # returns once the reply is queued, and when netproxyd reads slowly
        # (a loaded machine, ThreadSanitizer) part of it may still be here.
        # Wait until all of it has been acknowledged, so that what the test
        # measures is netproxyd's part alone.
        deadline = time.monotonic() + 10
        while outq(conn) and time.monotonic() < deadline:
            time.sleep(0.01)
        conn.close()

    t = threading.Thread(target=backend, daemon=True)
    t.start()
    port = free_port()
    with Netproxyd(config(port, backend_port)) as d:
        # A small window keeps most of the reply in netproxyd's send queue,
        # which a close with our upload unread would throw away with a reset.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(proxy_v1("203.0.113.7", "192.0.2.1", 51234, 443))

        def upload():
            try:
                for _ in range(200):
                    s.sendall(b"u" * 65536)
            except OSError:
                pass  # the server has gone: expected

        threading.Thread(target=upload, daemon=True).start()
        # Read only later: the reply waits in our receive queue meanwhile, where
        # a reset from netproxyd (closing with our upload unread) would drop it.
        time.sleep(0.5)
        got = bytearray()
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        s.close()
        t.join(10)
        lsock.close()
        line = d.wait_log(r"reason=\"backend: ")[0].string
        assert bytes(got) == reply, line


def test_idle_timeout_closes_only_idle_connections():
    """idle_timeout closes a relayed connection after that long without a
    byte either way; traffic keeps re-arming it."""
    import socket
    import time

    port = free_port()
    with EchoServer() as echo, Netproxyd(config(port, echo.port).replace(
            'connect = "127.0.0.1:%d"' % echo.port,
            'connect = "127.0.0.1:%d", idle_timeout = 0.5' % echo.port)) as d:
        busy = socket.create_connection(("127.0.0.1", port), timeout=5)
        busy.sendall(proxy_v1("203.0.113.7", "192.0.2.1", 1111, 443))
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        idle.sendall(proxy_v1("203.0.113.8", "192.0.2.1", 2222, 443) + b"once")
        assert idle.recv(10) == b"once"
        t0 = time.monotonic()
        # The busy one talks every 0.2 s for 1.5 s: three idle timeouts' worth.
        while time.monotonic() - t0 < 1.5:
            busy.sendall(b"tick")
            assert busy.recv(10) == b"tick"
            time.sleep(0.2)
        # By now the idle one was closed, about 0.5 s after its last byte.
        idle.settimeout(0.1)
        assert idle.recv(10) == b""
        line = d.wait_log(r"client=203\.0\.113\.8:2222 .*reason=\"idle timeout \(500 ms\)\"")[0].string
        seconds = float(re.search(r"duration=([\d.]+)s", line).group(1))
        assert 0.4 <= seconds < 1.2, line
        assert not [c for c in d.close_lines() if c["client"] == "203.0.113.7:1111"], \
            "the busy connection was closed"
        busy.close()
        idle.close()
