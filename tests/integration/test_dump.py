"""netproxy-dump, run as a program on the peer vectors and on bad usage."""

import ipaddress
import json
import subprocess

import pytest

EXIT = {"ok": 0, "error": 1, "incomplete": 2}
EXIT_USAGE = 64
EXIT_DATAERR = 65
EXIT_NOINPUT = 66

OPTIONS = ["--json", "--hex", "--max", "-h", "--help", "--version"]


def run(dump_path, *args, stdin=b""):
    """Run netproxy-dump; stdout and stderr come back as text."""
    proc = subprocess.run([str(dump_path), *map(str, args)], input=stdin,
                          capture_output=True, timeout=30)
    proc.stdout = proc.stdout.decode("utf-8")
    proc.stderr = proc.stderr.decode("utf-8")
    return proc


def run_json(dump_path, *args, stdin=b""):
    """Run with --json: exactly one JSON object on one line, decoded."""
    proc = run(dump_path, "--json", *args, stdin=stdin)
    assert proc.stdout.endswith("\n") and proc.stdout.count("\n") == 1, proc.stdout
    return proc, json.loads(proc.stdout)


def address_from_hex(family, hexstr):
    raw = bytes.fromhex(hexstr)
    if family == "UNIX":
        return raw.split(b"\0", 1)[0].decode("latin-1")
    return ipaddress.ip_address(raw)


# --- every vector, through --hex and --json ---------------------------------


def test_vector_json(dump_path, vector):
    data = bytes.fromhex(vector["hex"])
    proc, out = run_json(dump_path, "--hex", vector["hex"])
    expect = vector["expect"]

    assert out["result"] == expect, (out, vector.get("reason"))
    assert proc.returncode == EXIT[expect], proc.stderr
    assert proc.stderr == ""

    if expect == "error":
        assert out["error"].startswith("NP_E") and out["error"] != "NP_EAGAIN"
        assert isinstance(out["message"], str) and out["message"]
        return
    if expect == "incomplete":
        assert out["have"] == len(data)
        return

    for key in ("version", "command", "family", "transport", "header_len",
                "src_port", "dst_port", "src", "dst"):
        assert out[key] == vector[key], key
    assert out["v1_proto"] == (vector.get("v1_proto") if vector["version"] == 1 else None)
    assert out["data_len"] == len(data) - vector["header_len"]
    assert [(t["type"], t["hex"]) for t in out["tlvs"]] == \
        [(t["type"], t["hex"]) for t in vector["tlvs"]]
    if "crc32c" in vector:
        assert vector["crc32c"]["valid"] is True
        assert out["crc32c"] == "valid"
    else:
        assert out["crc32c"] is None

    # The README says to compare address bytes, not strings: do that too.
    for end in ("src", "dst"):
        if vector.get(end + "_hex") is None or out[end] is None:
            assert out[end] is None and vector[end] is None
            continue
        want = address_from_hex(vector["family"], vector[end + "_hex"])
        got = out[end] if vector["family"] == "UNIX" else ipaddress.ip_address(out[end])
        assert got == want, end


def test_vector_input_paths_agree(dump_path, vector, tmp_path):
    """stdin, a file and --hex give the same output and exit status."""
    data = bytes.fromhex(vector["hex"])
    via_hex = run(dump_path, "--json", "--hex", vector["hex"])
    via_stdin = run(dump_path, "--json", stdin=data)
    via_dash = run(dump_path, "--json", "-", stdin=data)
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    via_file = run(dump_path, "--json", path)

    for other in (via_stdin, via_dash, via_file):
        assert (other.returncode, other.stdout) == (via_hex.returncode, via_hex.stdout)


def test_hex_whitespace_is_ignored(dump_path, vectors_by_name):
    v = vectors_by_name["aws-nlb-privatelink-capture"]
    spaced = " ".join(v["hex"][i:i + 8] for i in range(0, len(v["hex"]), 8))
    spaced = spaced.replace(" ", "\n", 3).replace(" ", "\t", 2)
    a = run(dump_path, "--json", "--hex", v["hex"])
    b = run(dump_path, "--json", "--hex", "  " + spaced.upper() + "\n")
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout


def test_unix_path_is_json_escaped(dump_path):
    src = b"/tmp/caf\xe9 \"q\"\\\n".ljust(108, b"\0")
    dst = b"x" * 108  # no NUL at all: the whole 108 bytes
    block = src + dst
    header = (b"\r\n\r\n\0\r\nQUIT\n" + bytes([0x21, 0x31])
              + len(block).to_bytes(2, "big") + block)
    proc, out = run_json(dump_path, stdin=header)
    assert proc.returncode == 0
    assert proc.stdout.isascii()
    assert "\\u00e9" in proc.stdout
    assert out["src"] == "/tmp/caf\u00e9 \"q\"\\\n"
    assert out["dst"] == "x" * 108
    assert out["src_port"] is None and out["dst_port"] is None


# --- text output -------------------------------------------------------------


def text_of(dump_path, vector):
    proc = run(dump_path, "--hex", vector["hex"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_text_v1_tcp4(dump_path, vectors_by_name):
    v = vectors_by_name["v1-tcp4-spec-example-with-http"]
    out = text_of(dump_path, v)
    assert "1 (TCP4)" in out
    assert "PROXY" in out and "INET" in out and "STREAM" in out
    assert f"{v['src']}:{v['src_port']} -> {v['dst']}:{v['dst_port']}" in out
    assert f"{v['header_len']} bytes" in out
    data_len = len(v["hex"]) // 2 - v["header_len"]
    assert f"{data_len} bytes after the header" in out


def test_text_v1_unknown(dump_path, vectors_by_name):
    out = text_of(dump_path, vectors_by_name["nginx-v1-unknown"])
    assert "1 (UNKNOWN)" in out and "LOCAL" in out and "none" in out


def test_text_v2_ssl(dump_path, vectors_by_name):
    out = text_of(dump_path, vectors_by_name["go-haproxy-ssl-cn-capture"])
    assert "127.0.0.1:52362 -> 127.0.0.1:9006" in out
    assert "SSL" in out and "(0x20, 49 bytes)" in out
    assert "client 0x07 (SSL, CERT_CONN, CERT_SESS)" in out
    assert "verify 0 (certificate verified)" in out
    assert 'SSL_VERSION' in out and '"TLSv1.3"' in out
    assert 'SSL_CN' in out and '"Example Common Name Client Cert"' in out


def test_text_v2_ssl_ipv6(dump_path, vectors_by_name):
    out = text_of(dump_path, vectors_by_name["go-haproxy-ssl-cipher-capture"])
    assert "[::ffff:a01:5b0e]:62588 -> [::ffff:a01:19f]:443" in out
    assert "no client certificate" in out
    assert 'SSL_CIPHER' in out and '"TLS_AES_256_GCM_SHA384"' in out


def test_text_aws_capture(dump_path, vectors_by_name):
    out = text_of(dump_path, vectors_by_name["aws-nlb-privatelink-capture"])
    assert "172.31.7.113:51442 -> 172.31.10.31:80" in out
    assert "100 bytes" in out
    assert "CRC32C" in out and "e8d6892d (valid)" in out
    assert "AWS" in out and '"vpce-08d2bf15fac5001c9"' in out
    assert "NOOP" in out and "(0x04, 36 bytes)" in out
    # Wire order: CRC32C, AWS, NOOP.
    assert out.index("CRC32C") < out.index("AWS") < out.index("NOOP")


def test_text_gcp_capture(dump_path, vectors_by_name):
    out = text_of(dump_path, vectors_by_name["gcp-psc-codelab-capture"])
    assert "GCP" in out and "43686719580552292" in out and "0x009b34d70a003c64" in out


def test_text_error_line(dump_path, vectors_by_name):
    v = vectors_by_name["nginx-v2-tlv-set-fake-crc"]
    _, out = run_json(dump_path, "--hex", v["hex"])
    proc = run(dump_path, "--hex", v["hex"])
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == f"netproxy-dump: {out['error']}: {out['message']}\n"


def test_text_incomplete(dump_path):
    proc = run(dump_path, stdin=b"PROXY TCP4 ")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "NP_EAGAIN" in proc.stderr and "11 bytes" in proc.stderr


# --- options and usage errors ------------------------------------------------


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(dump_path, flag):
    proc = run(dump_path, flag)
    assert proc.returncode == 0
    assert proc.stderr == ""
    for opt in OPTIONS:
        assert opt in proc.stdout, opt
    for status in ("64", "65", "66"):
        assert status in proc.stdout


def test_version(dump_path):
    proc = run(dump_path, "--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("netproxy-dump ")
    assert proc.stdout.split()[1][0].isdigit()


@pytest.mark.parametrize("hexarg", ["zz", "0d0a0", "0d 0a0g", "0x0d0a", "0 d"])
def test_bad_hex(dump_path, hexarg):
    proc = run(dump_path, "--json", "--hex", hexarg)
    assert proc.returncode == EXIT_USAGE
    assert proc.stdout == ""
    assert "netproxy-dump" in proc.stderr and "--hex" in proc.stderr


@pytest.mark.parametrize("args", [["--bogus"], ["-x"], ["--hex"], ["--max"],
                                  ["--max", "-1", "--hex", "00"],
                                  ["--max", "12k", "--hex", "00"],
                                  ["--hex", "00", "some-file"],
                                  ["file-a", "file-b"]])
def test_usage_errors(dump_path, args):
    proc = run(dump_path, *args)
    assert proc.returncode == EXIT_USAGE
    assert proc.stdout == ""
    assert proc.stderr.strip()


def test_missing_file(dump_path, tmp_path):
    missing = tmp_path / "no-such-capture.bin"
    proc = run(dump_path, missing)
    assert proc.returncode == EXIT_NOINPUT
    assert proc.stdout == ""
    assert str(missing) in proc.stderr


def test_directory_is_unreadable(dump_path, tmp_path):
    proc = run(dump_path, tmp_path)
    assert proc.returncode == EXIT_NOINPUT
    assert proc.stderr.strip()


def test_input_cap(dump_path):
    v1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 5000 80\r\n"
    at_cap = v1 + b"x" * (1024 * 1024 - len(v1))
    proc, out = run_json(dump_path, stdin=at_cap)
    assert proc.returncode == 0 and out["data_len"] == len(at_cap) - len(v1)

    proc = run(dump_path, "--json", stdin=at_cap + b"x")
    assert proc.returncode == EXIT_DATAERR
    assert proc.stdout == ""
    assert "larger" in proc.stderr


def test_max_below_v2_header(dump_path, vectors_by_name):
    v = vectors_by_name["go-v2-proxy-tcp4"]
    n = v["header_len"]
    proc, out = run_json(dump_path, "--max", n - 1, "--hex", v["hex"])
    assert proc.returncode == 1
    assert out == {"result": "error", "error": "NP_ETOOBIG",
                   "message": out["message"]} and out["message"]
    proc, out = run_json(dump_path, "--max", n, "--hex", v["hex"])
    assert proc.returncode == 0 and out["header_len"] == n
    # Refused from the 16 fixed bytes alone: no need to wait for the rest.
    proc, out = run_json(dump_path, "--max", n - 1, "--hex", v["hex"][:32])
    assert out["error"] == "NP_ETOOBIG"
    proc = run(dump_path, "--max", 16, "--hex", v["hex"])
    assert proc.returncode == 1
    assert proc.stderr.startswith("netproxy-dump: NP_ETOOBIG: ")


def test_max_below_v1_line(dump_path, vectors_by_name):
    v = vectors_by_name["go-v1-fixtureTCP4V1"]
    proc, out = run_json(dump_path, "--max", 20, "--hex", v["hex"])
    assert proc.returncode == 1 and out["error"] == "NP_ETOOBIG"
