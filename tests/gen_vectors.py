#!/usr/bin/python3
"""Turn the JSON test vectors into a C header for the unit tests.

    gen_vectors.py tests/data/vectors-peers.json > build/gen/vectors.h

The header holds one static table, vectors[], with every fact a vector
states (outcome, header fields, address bytes, ports, TLVs in wire order, the
decoded SSL TLV, the CRC32C), so the C tests need no JSON parser and no data
files at run time. Output depends only on the input: same JSON, same bytes.

Besides the vectors' own facts, one field is computed here: diverge_at, the
length of the shortest prefix that is already no valid start of a header by
the fixed bytes alone (the "PROXY " prefix, the v2 signature, version,
command and family byte; checklist section E.1). Vectors tagged "eager" must
have one, and where a vector's text names the byte ("decidable from byte
13") the two must agree, or the generator stops: a wrong expectation would
otherwise slip into the tests silently.
"""

import json
import re
import sys

V1_PREFIX = b"PROXY "
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
# The seven family/transport bytes the spec lists for PROXY (checklist E.3).
V2_LISTED_FAM = {0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32}

COMMANDS = {"LOCAL": "NP_CMD_LOCAL", "PROXY": "NP_CMD_PROXY"}
FAMILIES = {"UNSPEC": "NP_AF_UNSPEC", "INET": "NP_AF_INET", "INET6": "NP_AF_INET6",
            "UNIX": "NP_AF_UNIX"}
TRANSPORTS = {"UNSPEC": "NP_TRANSPORT_UNSPEC", "STREAM": "NP_TRANSPORT_STREAM",
              "DGRAM": "NP_TRANSPORT_DGRAM"}
V1_PROTOS = {None: "NP_V1_NONE", "TCP4": "NP_V1_TCP4", "TCP6": "NP_V1_TCP6",
             "UNKNOWN": "NP_V1_UNKNOWN"}
EXPECT = {"ok": "1", "error": "0", "incomplete": "-1"}
ADDR_LEN = {"INET": 4, "INET6": 16, "UNIX": 108}

BYTES_PER_LINE = 16


def die(msg):
    sys.stderr.write("gen_vectors.py: %s\n" % msg)
    sys.exit(1)


def c_bytes(data, indent="\t\t"):
    """A C string literal, every byte as \\xNN.

    Escaping every byte means no \\x escape can swallow a following hex digit
    character. Long values are split into adjacent literals, one per line.
    """
    if not data:
        return '""'
    pieces = []
    for i in range(0, len(data), BYTES_PER_LINE):
        chunk = data[i:i + BYTES_PER_LINE]
        pieces.append('"' + "".join("\\x%02x" % b for b in chunk) + '"')
    return ("\n" + indent).join(pieces)


def c_u8p(data, indent="\t\t"):
    return "(const uint8_t *)" + c_bytes(data, indent)


def c_string(text):
    """A printable-ASCII string (a name) as a C literal."""
    if not all(0x20 <= ord(c) < 0x7F for c in text):
        die("non-printable name %r" % text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def c_comment(text):
    # Names are plain ASCII; keep "*/" from ending the comment anyway.
    return text.replace("*/", "* /")


def diverge_at(data):
    """Length of the first prefix the fixed bytes already rule out, or 0."""
    if not data:
        return 0
    if data[0] == V1_PREFIX[0]:
        for i, b in enumerate(data[:len(V1_PREFIX)]):
            if b != V1_PREFIX[i]:
                return i + 1
        return 0
    if data[0] == V2_SIG[0]:
        for i, b in enumerate(data[:len(V2_SIG)]):
            if b != V2_SIG[i]:
                return i + 1
        if len(data) > 12:
            ver, cmd = data[12] >> 4, data[12] & 0xF
            if ver != 2 or cmd > 1:
                return 13
        if len(data) > 13:
            fam = data[13]
            if fam >> 4 > 3 or fam & 0xF > 2:
                return 14
            if cmd == 1 and fam not in V2_LISTED_FAM:
                return 14
        return 0
    return 1


def stated_byte(v):
    """The prefix length a vector's own words give for its rejection, if any."""
    text = " ".join(str(v.get(k, "")) for k in ("reason", "notes"))
    m = re.search(r"decidable from byte (\d+)", text)
    return int(m.group(1)) if m else None


def hexbytes(v, key, where):
    try:
        return bytes.fromhex(v[key])
    except (KeyError, ValueError, TypeError) as e:
        die("%s: bad %s: %s" % (where, key, e))


class Emitter:
    def __init__(self):
        self.out = []

    def line(self, s=""):
        self.out.append(s)

    def tlv_array(self, sym, tlvs, where):
        """A struct vec_tlv array; SSL entries get their sub-TLV array first."""
        subs = {}
        for i, t in enumerate(tlvs):
            if "ssl" in t:
                if t["type"] != 0x20:
                    die("%s: ssl decode on TLV type 0x%02x" % (where, t["type"]))
                sub_sym = "%s_%d_sub" % (sym, i)
                self.tlv_array(sub_sym, t["ssl"]["sub"], where + " ssl")
                subs[i] = sub_sym
        self.line("static const struct vec_tlv %s[] = {" % sym)
        for i, t in enumerate(tlvs):
            value = hexbytes(t, "hex", where)
            if not 0 <= t["type"] <= 0xFF or len(value) > 0xFFFF:
                die("%s: TLV out of range" % where)
            self.line("\t{ /* %s */" % c_comment(t.get("type_name", "")))
            self.line("\t\t.type = 0x%02x," % t["type"])
            self.line("\t\t.value = %s," % c_u8p(value, "\t\t\t"))
            self.line("\t\t.len = %d," % len(value))
            if i in subs:
                ssl = t["ssl"]
                wire = b"".join(bytes([sub["type"]]) + len(bytes.fromhex(sub["hex"]))
                                .to_bytes(2, "big") + bytes.fromhex(sub["hex"])
                                for sub in ssl["sub"])
                if len(value) < 5 or value[0] != ssl["client"] \
                        or int.from_bytes(value[1:5], "big") != ssl["verify"] \
                        or value[5:] != wire:
                    die("%s: ssl fields disagree with the TLV bytes" % where)
                self.line("\t\t.has_ssl = 1,")
                self.line("\t\t.ssl_client = 0x%02x," % ssl["client"])
                self.line("\t\t.ssl_verify = 0x%08xu," % ssl["verify"])
                self.line("\t\t.ssl_sub = %s," % subs[i])
                self.line("\t\t.ssl_nsub = %d," % len(ssl["sub"]))
            self.line("\t},")
        if not tlvs:
            # An empty initializer list is not C11; one placeholder, never counted.
            self.line("\t{ .type = 0 },")
        self.line("};")
        self.line()


def main():
    if len(sys.argv) != 2:
        die("usage: gen_vectors.py vectors.json > vectors.h")
    with open(sys.argv[1], encoding="utf-8") as f:
        vectors = json.load(f)
    if not isinstance(vectors, list) or not vectors:
        die("expected a non-empty JSON list")

    names = set()
    e = Emitter()
    e.line("/* Generated by tests/gen_vectors.py from %s: do not edit. */"
           % c_comment(sys.argv[1].split("/")[-1]))
    e.line("#ifndef NP_TEST_VECTORS_H")
    e.line("#define NP_TEST_VECTORS_H")
    e.line()
    e.line("#include <stddef.h>")
    e.line("#include <stdint.h>")
    e.line()
    e.line('#include "netproxy.h"')
    e.line()
    e.line("/* One TLV or SSL sub-TLV, as the vector lists it. */")
    e.line("struct vec_tlv {")
    e.line("\tuint8_t type;")
    e.line("\tconst uint8_t *value;")
    e.line("\tsize_t len;")
    e.line("\tint has_ssl; /* an SSL TLV whose decoded fields follow */")
    e.line("\tuint8_t ssl_client;")
    e.line("\tuint32_t ssl_verify;")
    e.line("\tconst struct vec_tlv *ssl_sub;")
    e.line("\tsize_t ssl_nsub;")
    e.line("};")
    e.line()
    e.line("struct vec {")
    e.line("\tconst char *name;")
    e.line("\tconst uint8_t *bytes; /* the whole input, header and any application data */")
    e.line("\tsize_t len;")
    e.line("\tint expect; /* 1 ok, 0 error, -1 incomplete */")
    e.line("\tint eager;  /* tagged \"eager\": rejected before the header is complete */")
    e.line("\tint impl_defined; /* the spec leaves the outcome open (checklist E) */")
    e.line("\t/*")
    e.line("\t * Computed by the generator, not stated by the vector: the shortest")
    e.line("\t * prefix that the fixed bytes (\"PROXY \", v2 signature, version,")
    e.line("\t * command, family byte) already rule out; 0 when they do not.")
    e.line("\t */")
    e.line("\tsize_t diverge_at;")
    e.line("\t/* The rest only for expect == 1. */")
    e.line("\tint version, command, family, transport, v1_proto;")
    e.line("\tsize_t header_len;")
    e.line("\tint has_addr; /* src_hex/dst_hex given */")
    e.line("\tconst uint8_t *src_hex, *dst_hex;")
    e.line("\tsize_t addr_len; /* 4, 16 or 108 */")
    e.line("\tconst uint8_t *src_text, *dst_text; /* NULL when null */")
    e.line("\tsize_t src_text_len, dst_text_len;")
    e.line("\tint src_port, dst_port; /* -1 when null */")
    e.line("\tconst struct vec_tlv *tlvs;")
    e.line("\tsize_t ntlv;")
    e.line("\tint crc_present, crc_valid;")
    e.line("\tuint32_t crc_stored;")
    e.line("};")
    e.line()

    rows = []
    for idx, v in enumerate(vectors):
        name = v.get("name")
        if not isinstance(name, str) or name in names:
            die("vector %d: missing or duplicate name %r" % (idx, name))
        names.add(name)
        if v.get("expect") not in EXPECT:
            die("%s: unknown expect %r" % (name, v.get("expect")))
        data = hexbytes(v, "hex", name)
        tags = v.get("tags", [])
        row = {"name": name, "data": data, "v": v, "tags": tags,
               "diverge": diverge_at(data)}

        if v["expect"] != "error" and row["diverge"]:
            die("%s: expects %s, but the fixed bytes rule it out at length %d"
                % (name, v["expect"], row["diverge"]))
        if "eager" in tags:
            if v["expect"] != "error" or row["diverge"] == 0:
                die("%s: tagged eager but no fixed byte rules it out" % name)
        stated = stated_byte(v)
        if stated is not None and stated != row["diverge"]:
            die("%s: says byte %d, the fixed bytes say %d" % (name, stated, row["diverge"]))
        if row["diverge"] > len(data):
            die("%s: diverges past its end" % name)

        if v["expect"] == "ok":
            hl = v.get("header_len")
            if not isinstance(hl, int) or not 0 < hl <= len(data):
                die("%s: bad header_len" % name)
            for k in ("version", "command", "family", "transport"):
                if k not in v:
                    die("%s: no %s" % (name, k))
            row["has_addr"] = "src_hex" in v
            if row["has_addr"] != ("dst_hex" in v):
                die("%s: src_hex without dst_hex" % name)
            if row["has_addr"]:
                alen = ADDR_LEN.get(v["family"])
                row["src"] = hexbytes(v, "src_hex", name)
                row["dst"] = hexbytes(v, "dst_hex", name)
                if alen is None or len(row["src"]) != alen or len(row["dst"]) != alen:
                    die("%s: address bytes do not fit family %s" % (name, v["family"]))
            crc = v.get("crc32c")
            if crc is not None:
                stored = hexbytes(crc, "stored", name)
                if len(stored) != 4:
                    die("%s: crc32c.stored is not 4 bytes" % name)
                crc_tlvs = [t for t in v["tlvs"] if t["type"] == 0x03]
                if not crc_tlvs or bytes.fromhex(crc_tlvs[0]["hex"]) != stored:
                    die("%s: crc32c.stored is not the CRC32C TLV's value" % name)
            elif any(t["type"] == 0x03 for t in v.get("tlvs", [])):
                die("%s: CRC32C TLV without a crc32c entry" % name)
            e.tlv_array("vec%d_tlvs" % idx, v.get("tlvs", []), name)
        rows.append(row)

    e.line("static const struct vec vectors[] = {")
    for idx, row in enumerate(rows):
        v, data = row["v"], row["data"]
        e.line("\t{ /* %d */" % idx)
        e.line("\t\t.name = %s," % c_string(row["name"]))
        e.line("\t\t.bytes = %s," % c_u8p(data, "\t\t\t"))
        e.line("\t\t.len = %d," % len(data))
        e.line("\t\t.expect = %s," % EXPECT[v["expect"]])
        e.line("\t\t.eager = %d," % ("eager" in row["tags"]))
        e.line("\t\t.impl_defined = %d," % bool(v.get("impl_defined")))
        e.line("\t\t.diverge_at = %d," % row["diverge"])
        if v["expect"] == "ok":
            try:
                e.line("\t\t.version = %d," % v["version"])
                e.line("\t\t.command = %s," % COMMANDS[v["command"]])
                e.line("\t\t.family = %s," % FAMILIES[v["family"]])
                e.line("\t\t.transport = %s," % TRANSPORTS[v["transport"]])
                e.line("\t\t.v1_proto = %s," % V1_PROTOS[v.get("v1_proto")])
            except KeyError as err:
                die("%s: unknown value %s" % (row["name"], err))
            e.line("\t\t.header_len = %d," % v["header_len"])
            if row["has_addr"]:
                e.line("\t\t.has_addr = 1,")
                e.line("\t\t.src_hex = %s," % c_u8p(row["src"], "\t\t\t"))
                e.line("\t\t.dst_hex = %s," % c_u8p(row["dst"], "\t\t\t"))
                e.line("\t\t.addr_len = %d," % len(row["src"]))
            for end in ("src", "dst"):
                text = v.get(end)
                if text is None:
                    e.line("\t\t.%s_text = NULL," % end)
                else:
                    # UNIX paths are given as latin-1: one character per byte.
                    raw = text.encode("latin-1")
                    if all(0x20 <= b < 0x7F for b in raw):
                        lit = "(const uint8_t *)" + c_string(text)
                    else:
                        lit = c_u8p(raw, "\t\t\t")
                    e.line("\t\t.%s_text = %s," % (end, lit))
                    e.line("\t\t.%s_text_len = %d," % (end, len(raw)))
                port = v.get(end + "_port")
                e.line("\t\t.%s_port = %d," % (end, -1 if port is None else port))
            e.line("\t\t.tlvs = vec%d_tlvs," % idx)
            e.line("\t\t.ntlv = %d," % len(v.get("tlvs", [])))
            crc = v.get("crc32c")
            if crc is not None:
                e.line("\t\t.crc_present = 1,")
                e.line("\t\t.crc_stored = 0x%su," % crc["stored"].lower())
                e.line("\t\t.crc_valid = %d," % bool(crc["valid"]))
        e.line("\t},")
    e.line("};")
    e.line()
    e.line("#define VEC_COUNT (sizeof(vectors) / sizeof(vectors[0]))")
    e.line()
    e.line("#endif /* NP_TEST_VECTORS_H */")
    sys.stdout.write("\n".join(e.out) + "\n")


if __name__ == "__main__":
    main()
