"""The graceful stop (SIGTERM, SIGINT, shutdown_grace) and the backend-side
address in the log, that joins a backend's log line to its client."""
import hashlib
import os
import signal
import socket
import time

from npd import EchoServer, Netproxyd, SinkServer, free_port, proxy_v1, wait_for


def config(port, backend_port, extra=""):
    return (f"proxy_ports = {{ {port} }}\n"
            f"proxy_port_mappings = {{ [{port}] = \"svc\" }}\n"
            f"services = {{ svc = {{ connect = \"127.0.0.1:{backend_port}\" }} }}\n"
            f"workers = 2\n{extra}")


def open_relayed(port, client_port=40000):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(proxy_v1("192.0.2.1", "192.0.2.2", client_port, port))
    return s


def open_echoing(port):
    """A relayed connection to an echo service, seen to echo: it is established."""
    s = open_relayed(port)
    s.sendall(b"ping")
    assert s.recv(4) == b"ping"
    return s


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_a_transfer_finish_and_refuses_new_connections():
    """A connection in mid-transfer when SIGTERM comes completes byte for
    byte; new connections are refused meanwhile; netproxyd exits 0 once it
    has ended, and says so in its summary line."""
    payload = os.urandom(4 << 20)
    port = free_port()
    with SinkServer() as sink:
        d = Netproxyd(config(port, sink.port))
        with d:
            s = open_relayed(port)
            s.sendall(payload[:1 << 20])
            # A connection still waiting for its header has a second at most.
            silent = socket.create_connection(("127.0.0.1", port), timeout=10)
            wait_for(lambda: len(sink.records) == 1, 5, "the backend connection")
            d.proc.send_signal(signal.SIGTERM)
            d.wait_log(r"not accepting; relayed connections have up to 30\.000 s")
            t0 = time.monotonic()
            assert silent.recv(10) == b""
            assert time.monotonic() - t0 < 3
            silent.close()
            wait_for(lambda: refused(port), 5, "new connections refused")
            time.sleep(0.3)
            assert d.proc.poll() is None, d.log()
            s.sendall(payload[1 << 20:])
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(4096):
                got += chunk
            s.close()
            assert got == hashlib.sha256(payload).hexdigest().encode()
            assert d.proc.wait(5) == 0, d.log()
            log = d.log()
            done = [c for c in d.close_lines() if c["proxy"] != "-"]
            assert [(c["reason"], int(c["up"])) for c in done] == [("done", len(payload))], log
            assert "shutting down" in log  # the silent one, with no service
            assert ('1 of 2 connections finished, 1 closed "shutting down" '
                    '(1 of them waiting for their header)') in log, log
            d.stop()


def test_grace_ends_a_connection_that_never_ends():
    """With shutdown_grace = 1, an idle relayed connection is closed
    "shutting down" about a second after SIGTERM."""
    port = free_port()
    with EchoServer() as echo:
        d = Netproxyd(config(port, echo.port, "shutdown_grace = 1\n"))
        with d:
            s = open_echoing(port)
            t0 = time.monotonic()
            d.proc.send_signal(signal.SIGTERM)
            assert d.proc.wait(10) == 0, d.log()
            took = time.monotonic() - t0
            assert 0.8 <= took < 5, (took, d.log())
            assert s.recv(10) == b""
            s.close()
            cut = [c for c in d.close_lines() if c["reason"] == "shutting down"]
            assert len(cut) == 1 and int(cut[0]["up"]) == 4, d.log()
            assert '0 of 1 connections finished, 1 closed "shutting down" (0 of them' in d.log()


def test_second_sigterm_closes_at_once():
    """During the grace period, a second SIGTERM closes what is left at once."""
    port = free_port()
    with EchoServer() as echo:
        d = Netproxyd(config(port, echo.port, "shutdown_grace = 60\n"))
        with d:
            s = open_echoing(port)
            d.proc.send_signal(signal.SIGTERM)
            d.wait_log(r"not accepting")
            time.sleep(0.3)
            assert d.proc.poll() is None
            t0 = time.monotonic()
            d.proc.send_signal(signal.SIGTERM)
            assert d.proc.wait(5) == 0, d.log()
            assert time.monotonic() - t0 < 2, d.log()
            assert s.recv(10) == b""
            s.close()
            assert "SIGTERM again: closing the connections left at once" in d.log()
            assert [c["reason"] for c in d.close_lines()] == ["shutting down"], d.log()


def test_grace_zero_closes_at_once():
    port = free_port()
    with EchoServer() as echo:
        d = Netproxyd(config(port, echo.port, "shutdown_grace = 0\n"))
        with d:
            s = open_echoing(port)
            t0 = time.monotonic()
            d.proc.send_signal(signal.SIGINT)
            assert d.proc.wait(5) == 0, d.log()
            assert time.monotonic() - t0 < 2
            assert [c["reason"] for c in d.close_lines()] == ["shutting down"], d.log()
            s.close()


def test_logged_local_address_is_the_backends_view():
    """In plain mode the backend sees netproxyd's address, not the client's:
    the close line's local= is the address the backend's getpeername()
    returned, so the backend's line can be joined to the client's."""
    port = free_port()
    with EchoServer() as echo:
        d = Netproxyd(config(port, echo.port, "log_level = \"debug\"\n"))
        with d:
            seen = {}
            for i, cport in enumerate((40001, 40002, 40003)):
                s = open_relayed(port, cport)
                s.sendall(b"x")
                assert s.recv(1) == b"x"
                s.shutdown(socket.SHUT_WR)
                assert s.recv(1) == b""
                s.close()
            d.wait_log(r'reason="done"', count=3)
            for rec in echo.records:
                host, bport = rec["peer"]
                seen[f"{host}:{bport}"] = rec
            lines = d.close_lines()
            assert len(lines) == 3, d.log()
            assert sorted(c["local"] for c in lines) == sorted(seen), d.log()
            clients = {c["local"]: c["client"] for c in lines}
            assert sorted(clients.values()) == [f"192.0.2.1:{p}" for p in (40001, 40002, 40003)]
            # The establishment line says the same, while the connection is open.
            for c in lines:
                d.wait_log(rf"conn={c['conn']} port={port} service=svc peer=127\.0\.0\.1:\d+ "
                           rf"client={c['client']} dst=\S+ proxy=v[12] local={c['local']} "
                           rf"backend=127\.0\.0\.1:{echo.port} established$")
