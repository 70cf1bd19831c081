"""The lines a connection gets at the default level (log_connections).

An operator joins a service's log to its clients by the address the service
sees (local=): by default that line comes when the service is reached, and it
is the connection's one line; "closed" and "both" give the close line (bytes,
duration, reason) alone or besides. A connection that never reaches its
service, and a LOCAL one (a health check), keeps its close line whatever the
setting says.
"""
import re
import socket

from npd import EchoServer, Netproxyd, free_port, proxy_v1, proxy_v2, wait_for


def config(port, backend_port, extra=""):
    return (f"proxy_port_mappings = {{ [{port}] = \"svc\" }}\n"
            f"services = {{ svc = {{ connect = \"127.0.0.1:{backend_port}\" }} }}\n"
            f"proxy_header_timeout = 0.5\n{extra}")


def relay_one(port, client_port, payload=b"hello"):
    """A connection through netproxyd that echoes payload and ends; the
    address the backend saw it come from."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(proxy_v1("203.0.113.7", "192.0.2.1", client_port, port) + payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(100)
        assert chunk, "closed before the echo"
        got += chunk
    s.shutdown(socket.SHUT_WR)
    assert s.recv(100) == b""
    s.close()
    return got


def lines_of(d, client):
    """The info and warning lines that name client."""
    return [line for line in d.log().splitlines()
            if f"client={client} " in line and " debug: " not in line]


def test_default_is_one_line_when_established_that_joins_the_service_log():
    port = free_port()
    with EchoServer() as echo, Netproxyd(config(port, echo.port), log_both=False) as d:
        relay_one(port, 41001)
        wait_for(lambda: echo.records and echo.records[0]["eof"], 5.0,
                 "the service to see the connection end")
        seen = "%s:%d" % echo.records[0]["peer"]
        line = d.wait_log(r"client=203\.0\.113\.7:41001 .* established$")[0].string
        assert " info: " in line, line
        assert f" local={seen} " in line and " service=svc " in line, (line, seen)
        assert f" backend=127.0.0.1:{echo.port} " in line, line
        # A second connection after the first has closed: had the first had a
        # close line at the info level, it would be written by now (lines are
        # written in order, per turn of the loop).
        relay_one(port, 41002)
        d.wait_log(r"client=203\.0\.113\.7:41002 .* established$")
        assert lines_of(d, "203.0.113.7:41001") == [line], d.log()


def test_a_connection_that_never_reaches_its_service_has_its_close_line():
    port = free_port()
    with EchoServer() as echo, Netproxyd(config(port, echo.port), log_both=False) as d:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"PROXY TCP4 203.0.113.8")     # and no more: the header times out
        line = d.wait_log(r"reason=\"header timeout")[0].string
        s.close()
        assert " warning: " in line and "established" not in d.log(), d.log()


def test_a_health_check_has_no_line_and_a_failed_one_its_close_line():
    port = free_port()
    closed_port = free_port()        # nothing listens there
    conf = (f"proxy_port_mappings = {{ [{port}] = \"svc\", [{closed_port}] = \"gone\" }}\n"
            f"proxy_ports = {{ {port}, {closed_port} }}\n")
    with EchoServer() as echo:
        gone = free_port()
        conf += (f"services = {{ svc = {{ connect = \"127.0.0.1:{echo.port}\" }},\n"
                 f"             gone = {{ connect = \"127.0.0.1:{gone}\" }} }}\n")
        with Netproxyd(conf, log_both=False) as d:
            for p in (port, closed_port):
                s = socket.create_connection(("127.0.0.1", p), timeout=5)
                s.sendall(proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, command=0))   # LOCAL
                s.shutdown(socket.SHUT_WR)
                s.settimeout(5)
                try:
                    while s.recv(100):
                        pass
                except ConnectionResetError:
                    pass
                s.close()
            line = d.wait_log(r"service=gone .*reason=\"backend gone")[0].string
            assert " warning: " in line, line
            # The check that passed: after the failed one's line, and none of its own.
            relay_one(port, 41003)
            d.wait_log(r"client=203\.0\.113\.7:41003 .* established$")
            assert not [x for x in d.log().splitlines()
                        if "service=svc" in x and "proxy=v2-local" in x], d.log()


def test_closed_and_both_and_a_reload_between_them():
    port = free_port()
    with EchoServer() as echo, Netproxyd(config(port, echo.port, 'log_connections = "closed"\n'),
                                         log_both=False) as d:
        relay_one(port, 41004)
        close = d.wait_log(r"client=203\.0\.113\.7:41004 .*reason=\"done\"")[0].string
        assert " info: " in close and re.search(r" up=5 down=5 ", close), close
        assert lines_of(d, "203.0.113.7:41004") == [close], d.log()

        d.reload(config(port, echo.port, 'log_connections = "both"\n'))
        d.wait_log(r"reloaded: generation 2")
        relay_one(port, 41005)
        d.wait_log(r"client=203\.0\.113\.7:41005 .*reason=\"done\"")
        both = lines_of(d, "203.0.113.7:41005")
        assert len(both) == 2 and both[0].endswith(" established"), both
        assert re.search(r" local=(\S+) ", both[0]).group(1) == \
            re.search(r" local=(\S+) ", both[1]).group(1), both


def test_a_wrong_value_is_refused_naming_the_choices():
    port = free_port()
    with EchoServer() as echo:
        d = Netproxyd(config(port, echo.port, 'log_connections = "all"\n'), ready=None,
                      log_both=False)
        try:
            assert d.proc.wait(10) == 1
            assert ('log_connections: expected "established", "closed" or "both", got "all"'
                    in d.log()), d.log()
        finally:
            d.stop()
