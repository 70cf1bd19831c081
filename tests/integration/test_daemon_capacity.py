"""Capacity an attacker cannot exhaust: the connection limit follows the
descriptor limit unless max_connections says otherwise, and at the limit the
connection waiting longest for its header makes room for a new one, so that
silent connections cannot keep out the clients that send their headers."""
import os
import socket

from npd import EchoServer, Netproxyd, free_port, proxy_v1, talk, wait_for

GOOD = proxy_v1("203.0.113.9", "192.0.2.1", 40000, 443)


def config(port, backend, extra=""):
    return (f'proxy_ports = {{ "127.0.0.1:{port}" }}\n'
            f'proxy_port_mappings = {{ [{port}] = "svc" }}\n'
            f'services = {{ svc = {{ connect = "127.0.0.1:{backend}" }} }}\n'
            'workers = 1\nproxy_header_timeout = 30\n' + extra)


def sockets(pid):
    """How many sockets process pid has open (it runs as nobody; we are root or its user)."""
    fds = f"/proc/{pid}/fd"
    n = 0
    for fd in os.listdir(fds):
        try:
            n += os.readlink(f"{fds}/{fd}").startswith("socket:")
        except OSError:
            pass  # closed meanwhile
    return n


def accepted(d, before, n):
    """Wait until netproxyd holds n more sockets than before: every one accepted."""
    wait_for(lambda: sockets(d.proc.pid) >= before + n, 5, f"{n} connections accepted")


def silent(port, n):
    """n connections that send nothing, each accepted before the next is made."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        out.append(s)
    return out


def closed(s):
    s.settimeout(0.05)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def test_silent_connections_make_room_oldest_first():
    """With the limit full of silent connections, five good clients are all
    served (the old daemon refused them for the whole header timeout), and the
    five oldest silent ones are the ones closed."""
    port = free_port()
    with EchoServer() as echo, Netproxyd(config(port, echo.port, "max_connections = 20\n")) as d:
        d.wait_log(r"connection limit: 20 \(max_connections\)")
        before = sockets(d.proc.pid)
        held = silent(port, 20)
        good = []
        try:
            accepted(d, before, 20)  # and each waiting for its header
            for i in range(5):
                g = socket.create_connection(("127.0.0.1", port), timeout=5)
                good.append(g)  # kept open: each needs a place of its own
                g.sendall(GOOD + b"good %d" % i)
                assert g.recv(64) == b"good %d" % i, d.log()
            d.wait_log(r"shed: at the connection limit \(20\), the connection waiting longest "
                       r"for its header makes room", count=5)
            wait_for(lambda: sum(closed(s) for s in held[:5]) == 5 or None, timeout=3,
                     what="the five oldest closed")
            assert not any(closed(s) for s in held[5:])
        finally:
            for s in held + good:
                s.close()


def test_at_the_limit_with_none_waiting_a_new_connection_is_refused():
    port = free_port()
    with EchoServer() as echo, Netproxyd(config(port, echo.port, "max_connections = 3\n")) as d:
        kept = []
        try:
            for i in range(3):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(GOOD + b"x")
                assert s.recv(1) == b"x"
                kept.append(s)
            extra = socket.create_connection(("127.0.0.1", port), timeout=3)
            try:
                extra.sendall(GOOD + b"y")
                got = extra.recv(1)
            except (ConnectionResetError, BrokenPipeError):
                got = b""
            finally:
                extra.close()
            assert got == b""  # closed at the accept: refused, not relayed
            d.wait_log(r"rejected peer=127\.0\.0\.1:\d+ port=\d+: the connection limit \(3\) is "
                       r"reached, none of them waiting for its header")
        finally:
            for s in kept:
                s.close()


def test_the_default_limit_follows_the_descriptor_limit():
    """Without max_connections: (descriptors - reserve) / 2, said at start; the
    old default was a fixed 10000, which 1024 descriptors cannot hold."""
    port = free_port()
    with EchoServer() as echo, Netproxyd(config(port, echo.port),
                                         prefix=["prlimit", "--nofile=300:300", "--"]) as d:
        m = d.wait_log(r"connection limit: (\d+), from the descriptor limit 300")[0]
        limit = int(m.group(1))
        assert limit == (300 - (64 + 1)) // 2, limit
        before = sockets(d.proc.pid)
        held = silent(port, limit)
        try:
            accepted(d, before, limit)
            got, how = talk(port, GOOD + b"still", timeout=5)
            assert got == b"still", d.log()
            assert "Too many open files" not in d.log()
        finally:
            for s in held:
                s.close()


def test_a_max_connections_the_descriptors_cannot_hold_is_warned_about():
    port = free_port()
    with EchoServer() as echo, Netproxyd(config(port, echo.port, "max_connections = 10000\n"),
                                         prefix=["prlimit", "--nofile=1024:1024", "--"]) as d:
        d.wait_log(r"warning: max_connections \(10000\) needs about 20066 descriptors, more than "
                   r"the limit of 1024: past about 479 connections")
