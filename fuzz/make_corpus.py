#!/usr/bin/env python3
"""Regenerate the seed corpora of the fuzz targets.

    python3 fuzz/make_corpus.py [--check]

fuzz/corpus/fuzz_parse/ and fuzz/corpus/fuzz_roundtrip/ get one file per
vector of tests/data/vectors-peers.json (its raw bytes, named after the
vector) plus hand-made headers named own-*; fuzz/corpus/fuzz_tlv/ gets the
TLV areas of the accepted vectors that have TLVs (vec-<name>) plus hand-made
areas (own-*). fuzz/corpus/fuzz_config/ gets the configs of the config unit
tests (the C string literals that are Lua snippets, named after the test and
a hash of the text), examples/netproxyd.conf.lua and the built-in default.
The directories are emptied and rewritten, so the output depends only on
those files and this script. With --check nothing is written: the script
exits 1 when the stored corpus differs.

Standard library only.
"""

import hashlib
import json
import os
import re
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(ROOT, "tests", "data", "vectors-peers.json")
CONFIG_TESTS = [os.path.join(ROOT, "tests", "unit", name)
                for name in ("test_npd_config.c", "test_npd_prosody.c")]
CONFIG_FILES = {"example-netproxyd.conf.lua": os.path.join(ROOT, "examples", "netproxyd.conf.lua")}
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

SIG = b"\r\n\r\n\x00\r\nQUIT\n"

ALPN, AUTHORITY, CRC32C, NOOP, UNIQUE_ID = 0x01, 0x02, 0x03, 0x04, 0x05
SSL, NETNS, GCP, AWS, AZURE = 0x20, 0x30, 0xE0, 0xEA, 0xEE
SSL_VERSION, SSL_CN, SSL_CIPHER, SSL_SIG_ALG = 0x21, 0x22, 0x23, 0x24
SSL_KEY_ALG, SSL_GROUP, SSL_SIG_SCHEME, SSL_CLIENT_CERT = 0x25, 0x26, 0x27, 0x28


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def tlv(t, value):
    return bytes([t]) + struct.pack(">H", len(value)) + value


def ssl(client, verify, subs):
    return tlv(SSL, bytes([client]) + struct.pack(">I", verify) + b"".join(subs))


def v2(cmd, fam, block, tlvs=b"", crc=False):
    """A v2 header; with crc, a CRC32C TLV goes in front of tlvs, filled in."""
    body = block + (tlv(CRC32C, b"\0\0\0\0") if crc else b"") + tlvs
    hdr = bytearray(SIG + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(body)) + body)
    if crc:
        at = 16 + len(block) + 3
        hdr[at:at + 4] = struct.pack(">I", crc32c(bytes(hdr)))
    return bytes(hdr)


def inet4(src, dst, sport, dport):
    return bytes(src) + bytes(dst) + struct.pack(">HH", sport, dport)


def inet6(src, dst, sport, dport):
    return bytes(src) + bytes(dst) + struct.pack(">HH", sport, dport)


def unix(src, dst):
    return src.ljust(108, b"\0") + dst.ljust(108, b"\0")


A4 = inet4([192, 0, 2, 1], [198, 51, 100, 2], 56324, 443)
A6 = inet6(bytes.fromhex("20010db8000000000000000000000001"),
           bytes.fromhex("20010db8000000000000000000000002"), 4242, 8443)

ALL_SSL_SUBS = [
    tlv(SSL_VERSION, b"TLSv1.3"),
    tlv(SSL_CN, b"client.example.com"),
    tlv(SSL_CIPHER, b"TLS_AES_128_GCM_SHA256"),
    tlv(SSL_SIG_ALG, b"SHA256"),
    tlv(SSL_KEY_ALG, b"RSA2048"),
    tlv(SSL_GROUP, b"X25519"),
    tlv(SSL_SIG_SCHEME, b"rsa_pss_rsae_sha256"),
    tlv(SSL_CLIENT_CERT, bytes(range(64))),
]
SSL_ALL = ssl(0x07, 0, ALL_SSL_SUBS)
VENDOR = (tlv(AWS, b"\x01vpce-08d2bf15fac5001c9")
          + tlv(AZURE, b"\x01" + struct.pack("<I", 0x2100011A))
          + tlv(GCP, struct.pack(">Q", 0x0123456789ABCDEF)))
EVERY_TLV = (tlv(ALPN, b"h2") + tlv(AUTHORITY, b"www.example.com") + tlv(NOOP, b"\0" * 3)
             + tlv(UNIQUE_ID, bytes(range(32))) + SSL_ALL + tlv(NETNS, b"blue") + VENDOR
             + tlv(0xF0, b"experimental"))


def own_headers():
    """Hand-made inputs for fuzz_parse and fuzz_roundtrip."""
    unknown_max = b"PROXY UNKNOWN " + b"x" * (107 - 14 - 2) + b"\r\n"
    assert len(unknown_max) == 107
    ffff = ":".join(["ffff"] * 8)
    tcp6_long = "PROXY TCP6 {0} {0} 65535 65535\r\n".format(ffff).encode()
    return {
        "own-v1-unknown-max-107": unknown_max,
        "own-v1-unknown-bare": b"PROXY UNKNOWN\r\n",
        "own-v1-tcp4-max-fields": b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        "own-v1-tcp6-longest": tcp6_long,
        # Found by fuzz_parse: a lone LF inside a line whose CRLF comes later;
        # NP_EADDRESS uncapped, NP_ELINE under np_parse_max(48).
        "own-v1-lone-lf-before-crlf": b"PROXY TCP4 127.0.PROXY0.1 12 \n7.0.0.1 65533 65533\r\nGET /",
        "own-v1-tcp6-dotted-tail": b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 0\r\nGET /\r\n",
        "own-v1-tcp6-zero-runs": b"PROXY TCP6 1:0:0:2:0:0:0:3 0:0:1:0:0:1:0:0 80 8080\r\n",
        "own-v1-prefix-cr": b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r",
        # Found by fuzz_parse: the 9-byte prefix is NP_EFAMILY (token judged
        # early), the whole input NP_ELINE (lone LF found first).
        "own-v1-bad-token-lone-lf": b"PROXY TCXY TCP6 fe80::1%eth0 fe80::2 80\n",
        "own-v2-unix-stream-tlvs": v2(1, 0x31, unix(b"/run/haproxy/front.sock", b"/run/app.sock"),
                                      tlv(ALPN, b"http/1.1") + tlv(AUTHORITY, b"unix.example")),
        "own-v2-unix-dgram-full-paths": v2(1, 0x32, unix(b"s" * 108, b"d" * 108)),
        "own-v2-every-tlv-crc32c": v2(1, 0x11, A4, EVERY_TLV, crc=True),
        "own-v2-tcp6-every-tlv-crc32c": v2(1, 0x21, A6, EVERY_TLV, crc=True),
        "own-v2-ssl-all-subs": v2(1, 0x11, A4, SSL_ALL),
        "own-v2-ssl-empty-subs": v2(1, 0x11, A4, ssl(0x01, 1, [])),
        "own-v2-vendor-tlvs": v2(1, 0x12, A4, VENDOR),
        "own-v2-local-tlvs-crc32c": v2(0, 0x00, b"", tlv(AUTHORITY, b"health") + tlv(NOOP, b""), crc=True),
        "own-v2-local-inet-block-tlvs": v2(0, 0x11, A4, tlv(UNIQUE_ID, b"id-1")),
        "own-v2-proxy-unspec-tlvs": v2(1, 0x00, b"", tlv(ALPN, b"h2")),
        "own-v2-udp6": v2(1, 0x22, A6),
        "own-v2-unique-id-128": v2(1, 0x11, A4, tlv(UNIQUE_ID, b"u" * 128)),
        "own-v2-realistic-bench": v2(1, 0x11, A4, tlv(ALPN, b"h2") + tlv(AUTHORITY, b"www.example.com")
                                     + tlv(UNIQUE_ID, bytes(range(32))), crc=True),
        "own-v2-tcp4-then-data": v2(1, 0x11, A4) + b"GET / HTTP/1.1\r\n\r\n",
        "own-v2-bad-crc": bytes(bytearray(v2(1, 0x11, A4, tlv(ALPN, b"h2"), crc=True))[:-1]) + b"3",
        "own-v2-truncated-tlv": v2(1, 0x11, A4, tlv(ALPN, b"h2")[:-1]),
        "own-v2-prefix-15": SIG + b"\x21\x11\x00",
    }


def own_areas():
    """Hand-made TLV areas for fuzz_tlv."""
    area_crc = bytearray(tlv(CRC32C, b"\0\0\0\0") + tlv(ALPN, b"h2"))
    area_crc[3:7] = struct.pack(">I", crc32c(bytes(area_crc)))
    return {
        "own-every-tlv": EVERY_TLV,
        "own-ssl-all-subs": SSL_ALL,
        "own-ssl-bad-sub": ssl(0x03, 0, [tlv(SSL_CN, b"cn")[:-1]]),
        "own-ssl-short": tlv(SSL, b"\x01\0\0"),
        "own-vendor": VENDOR,
        "own-crc32c-valid-area": bytes(area_crc),
        "own-crc32c-bad-len": tlv(CRC32C, b"\0\0\0"),
        "own-unique-id-129": tlv(UNIQUE_ID, b"u" * 129),
        "own-truncated-len": b"\x01\x00",
        "own-len-past-end": b"\x02\x00\x10abc",
        "own-zero-len-run": tlv(NOOP, b"") * 8,
        "own-empty": b"",
    }


def tlv_area(vec, raw):
    """The TLV area of an accepted vector: the last bytes of its header."""
    area = b"".join(tlv(t["type"], bytes.fromhex(t["hex"])) for t in vec["tlvs"])
    end = vec["header_len"]
    assert raw[end - len(area):end] == area, vec["name"]
    return area


# A C string literal, or a macro name standing for one; comments and
# whitespace between them join adjacent ones into one string, as in C.
C_LITERAL = re.compile(r'"(?:\\.|[^"\\\n])*"')
C_SKIP = re.compile(r'\s+|/\*.*?\*/|//[^\n]*', re.S)
C_ESCAPES = {"n": 10, "t": 9, "r": 13, '"': 34, "\\": 92, "'": 39, "a": 7, "b": 8,
             "f": 12, "v": 11, "?": 63}


def c_string(body):
    """The bytes of a C string literal's body."""
    out, i = bytearray(), 0
    while i < len(body):
        if body[i] != "\\":
            out += body[i].encode()
            i += 1
        elif body[i + 1] in C_ESCAPES:
            out.append(C_ESCAPES[body[i + 1]])
            i += 2
        elif body[i + 1] == "x":
            digits = re.match(r"[0-9a-fA-F]+", body[i + 2:]).group()
            out.append(int(digits, 16) & 0xFF)
            i += 2 + len(digits)
        else:
            digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group()
            out.append(int(digits, 8))
            i += 1 + len(digits)
    return bytes(out)


def c_strings(src):
    """Every run of adjacent string literals (and string macros) in C source."""
    macros = {m.group(1): c_string(m.group(2)[1:-1]) for m in
              re.finditer(r'^#define (\w+) ("(?:\\.|[^"\\\n])*")$', src, re.M)}
    src = re.sub(r"^#.*$", "", src, flags=re.M)
    token = re.compile("|".join([C_LITERAL.pattern] + [r"\b%s\b" % m for m in macros]))
    runs, pos = [], 0
    while True:
        m = token.search(src, pos)
        if not m:
            return runs
        parts, pos = [], m.start()
        while True:
            t = token.match(src, pos)
            if t:
                tok = t.group()
                parts.append(c_string(tok[1:-1]) if tok.startswith('"') else macros[tok])
                pos = t.end()
                continue
            skip = C_SKIP.match(src, pos)
            if not skip:
                break
            pos = skip.end()
        runs.append(b"".join(parts))


# What the tests expect back (messages, -t's lines) is not a config.
NOT_CONFIG = re.compile(rb"^(\n*(t\.lua|listen |trusted:|header timeout|max header|a Prosody config|"
                        rb"\d+ files read)|%s|\*)")


def config_seeds():
    """The unit tests' Lua snippets, the example and the built-in default."""
    seeds = {}
    for path in CONFIG_TESTS:
        with open(path, encoding="utf-8") as f:
            src = f.read()
        stem = os.path.splitext(os.path.basename(path))[0]
        for text in c_strings(src):
            if (b"=" not in text and not text.endswith(b"\n")) or NOT_CONFIG.match(text) \
                    or b"-> " in text or b"\0" in text:
                continue
            seeds["{}-{}".format(stem, hashlib.sha1(text).hexdigest()[:10])] = text
    for name, path in CONFIG_FILES.items():
        with open(path, "rb") as f:
            seeds[name] = f.read()
    with open(os.path.join(ROOT, "daemon", "config.c"), encoding="utf-8") as f:
        default = re.search(r"npd_config_default_lua\[\] =\n((?:\s*\"[^\n]*\"\n?)+);", f.read())
    seeds["builtin-default"] = b"".join(c_string(lit[1:-1]) for lit in
                                        C_LITERAL.findall(default.group(1)))
    return seeds


def corpora():
    with open(VECTORS, encoding="utf-8") as f:
        vectors = json.load(f)
    headers, areas = {}, {}
    for vec in vectors:
        raw = bytes.fromhex(vec["hex"])
        headers[vec["name"]] = raw
        if vec["expect"] == "ok" and vec.get("tlvs"):
            areas["vec-" + vec["name"]] = tlv_area(vec, raw)
    for name, data in own_headers().items():
        assert name not in headers
        headers[name] = data
    areas.update(own_areas())
    return {"fuzz_parse": headers, "fuzz_roundtrip": headers, "fuzz_tlv": areas,
            "fuzz_config": config_seeds()}


def stored(d):
    if not os.path.isdir(d):
        return {}
    out = {}
    for name in os.listdir(d):
        with open(os.path.join(d, name), "rb") as f:
            out[name] = f.read()
    return out


def main(argv):
    check = "--check" in argv[1:]
    total, differ = 0, False
    for target, files in corpora().items():
        d = os.path.join(CORPUS, target)
        if check:
            if stored(d) != files:
                print("corpus {}: differs from make_corpus.py".format(target))
                differ = True
            continue
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        size = 0
        for name, data in sorted(files.items()):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            size += len(data)
        total += size
        print("corpus {}: {} files, {} bytes".format(target, len(files), size))
    if check:
        return 1 if differ else 0
    print("corpus total: {} bytes".format(total))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
