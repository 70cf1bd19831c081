/*
 * test_spec.c - our own vectors, written from the specification
 * (doc/proxy-protocol.txt 2026/04/27) and the project's receiver policy
 * (spec-checklist.md section E), not from the library's code.
 *
 * Every parse error is asserted with its exact NP_E* code, so a change of
 * which error a malformed header gets is a visible decision, not an accident.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#include "netproxy.h"
#include "tap.h"
#include "reference.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Big enough for the largest v2 header plus some application data. */
static uint8_t wire[NP_V2_MAX_LEN + 64];

/* A v2 header: signature, ver_cmd, fam, len = plen, then the payload. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *payload, size_t plen)
{
	memcpy(out, sig, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	store16(out + 14, (unsigned)plen);
	if (plen)
		memcpy(out + 16, payload, plen);
	return 16 + plen;
}

/* One TLV at w; returns its size. */
static size_t tlv(uint8_t *w, uint8_t type, const void *value, size_t len)
{
	w[0] = type;
	store16(w + 1, (unsigned)len);
	if (len)
		memcpy(w + 3, value, len);
	return 3 + len;
}

/* The header must not be touched by a call that does not succeed. */
static int hdr_untouched(const struct np_header *h)
{
	const uint8_t *b = (const uint8_t *)h;

	for (size_t i = 0; i < sizeof(*h); i++)
		if (b[i] != 0xA5)
			return 0;
	return 1;
}

static int parse_poisoned(const void *buf, size_t len, struct np_header *h)
{
	memset(h, 0xA5, sizeof(*h));
	return np_parse(buf, len, h);
}

/* ------------------------------------------------------------------------ */
/* v1                                                                       */
/* ------------------------------------------------------------------------ */

struct v1_case {
	const char *name;
	const char *head; /* the bytes given to np_parse (whole input for errors) */
	const char *tail; /* application data after a valid header */
	int want;	  /* 0: valid, expect strlen(head); else the NP_E* code */
	uint8_t proto;	  /* expected v1_proto when valid */
	const char *src, *dst;
	uint16_t sport, dport;
};

#define V1_OK4(n, h, t, s, d, sp, dp) {n, h, t, 0, NP_V1_TCP4, s, d, sp, dp}
#define V1_OK6(n, h, t, s, d, sp, dp) {n, h, t, 0, NP_V1_TCP6, s, d, sp, dp}
#define V1_UNK(n, h) {n, h, "", 0, NP_V1_UNKNOWN, NULL, NULL, 0, 0}
#define V1_ERR(n, h, e) {n, h, "", e, 0, NULL, NULL, 0, 0}

static const struct v1_case v1_cases[] = {
	/* Section 2.1, the example before an HTTP request, with that request after it. */
	V1_OK4("spec 2.1 example", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
	       "GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n", "192.168.0.1", "192.168.0.11", 56324, 443),
	/* Section 2.1, the maximum lengths a receiver must support. */
	V1_OK4("spec TCP4 maximum (56 bytes)", "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", "",
	       "255.255.255.255", "255.255.255.255", 65535, 65535),
	V1_OK6("spec TCP6 maximum (104 bytes)",
	       "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
	       "", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, 65535),
	V1_UNK("spec UNKNOWN short form (15 bytes)", "PROXY UNKNOWN\r\n"),
	V1_UNK("spec worst case (107 bytes)",
	       "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
	V1_UNK("UNKNOWN: anything before CRLF is ignored", "PROXY UNKNOWN 1.2.3.4 garbage !! 0777\r\n"),
	V1_UNK("UNKNOWN: a lone trailing space", "PROXY UNKNOWN \r\n"),
	V1_OK4("TCP4 zeros are single digits", "PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n", "x", "0.0.0.0", "10.0.0.1", 0, 0),
	/* IPv6 text forms: senders use inet_ntop(), so compressed forms are the usual ones. */
	V1_OK6("TCP6 compressed", "PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\n", "", "2001:db8::1", "2001:db8::2",
	       1234, 80),
	V1_OK6("TCP6 full form with leading zeros in groups",
	       "PROXY TCP6 2001:0db8:0000:0000:0000:0000:0000:0001 2001:0db8:0000:0000:0000:0000:0000:0002 1234 80\r\n",
	       "", "2001:db8::1", "2001:db8::2", 1234, 80),
	V1_OK6("TCP6 dotted tail ::ffff:1.2.3.4", "PROXY TCP6 ::ffff:1.2.3.4 ::ffff:192.168.0.11 1 2\r\n", "",
	       "::ffff:102:304", "::ffff:c0a8:b", 1, 2),
	V1_OK6("TCP6 dotted tail after six groups", "PROXY TCP6 1:2:3:4:5:6:1.2.3.4 ::1 1 2\r\n", "",
	       "1:2:3:4:5:6:102:304", "::1", 1, 2),
	V1_OK6("TCP6 upper case hex", "PROXY TCP6 2001:DB8::ABCD FE80::1 1 2\r\n", "", "2001:db8::abcd", "fe80::1", 1,
	       2),
	V1_OK6("TCP6 :: and ::1", "PROXY TCP6 :: ::1 0 0\r\n", "", "::", "::1", 0, 0),
	V1_OK6("TCP6 1:: and eight groups", "PROXY TCP6 1:: 1:2:3:4:5:6:7:8 1 2\r\n", "", "1::", "1:2:3:4:5:6:7:8", 1,
	       2),
	V1_OK6("TCP6 eight single-digit groups", "PROXY TCP6 0:0:0:0:0:0:0:0 a:b:c:d:e:f:0:1 1 2\r\n", "", "::",
	       "a:b:c:d:e:f:0:1", 1, 2),

	/* IPv6 text the grammar refuses. */
	V1_ERR("TCP6 zone id in source", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 zone id in destination", "PROXY TCP6 ::1 fe80::1%25eth0 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 two ::", "PROXY TCP6 1::2::3 ::1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 nine groups", "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 seven groups without ::", "PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 :: standing for no group", "PROXY TCP6 1:2:3:4::5:6:7:8 ::1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 five hex digits", "PROXY TCP6 12345::1 ::1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 :::", "PROXY TCP6 :::1 ::1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 leading single colon", "PROXY TCP6 :1::2 ::1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 trailing single colon", "PROXY TCP6 1:2:3:4:5:6:7:8: ::1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 non-hex digit", "PROXY TCP6 g::1 ::1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 with IPv4 addresses", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 dotted tail with a leading zero", "PROXY TCP6 ::ffff:01.2.3.4 ::1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP6 dotted tail after seven groups", "PROXY TCP6 1:2:3:4:5:6:7:1.2.3.4 ::1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP4 with IPv6 addresses", "PROXY TCP4 ::1 ::1 1 2\r\n", NP_EADDRESS),

	/* IPv4 and ports: decimal, no heading zeros, in range. */
	V1_ERR("TCP4 leading zero in last octet", "PROXY TCP4 192.168.0.01 192.168.0.11 56324 443\r\n", NP_EADDRESS),
	V1_ERR("TCP4 leading zero in first octet", "PROXY TCP4 010.0.0.1 192.168.0.11 56324 443\r\n", NP_EADDRESS),
	V1_ERR("TCP4 octet 00", "PROXY TCP4 1.2.3.4 00.0.0.0 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP4 octet 256", "PROXY TCP4 256.1.1.1 1.1.1.1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP4 three octets", "PROXY TCP4 1.2.3 1.1.1.1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP4 five octets", "PROXY TCP4 1.2.3.4.5 1.1.1.1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP4 empty octet", "PROXY TCP4 1..3.4 1.1.1.1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP4 hex octet", "PROXY TCP4 1a.2.3.4 1.1.1.1 1 2\r\n", NP_EADDRESS),
	V1_ERR("TCP4 no ports", "PROXY TCP4 1.2.3.4 5.6.7.8\r\n", NP_EADDRESS),
	V1_ERR("source port with leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n", NP_EPORT),
	V1_ERR("destination port with leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 80 0443\r\n", NP_EPORT),
	V1_ERR("port 00", "PROXY TCP4 1.2.3.4 5.6.7.8 00 1\r\n", NP_EPORT),
	V1_ERR("source port 65536", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 443\r\n", NP_EPORT),
	V1_ERR("destination port 65536", "PROXY TCP4 1.2.3.4 5.6.7.8 443 65536\r\n", NP_EPORT),
	V1_ERR("port of six digits", "PROXY TCP4 1.2.3.4 5.6.7.8 100000 1\r\n", NP_EPORT),
	V1_ERR("negative port", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 1\r\n", NP_EPORT),
	V1_ERR("hex port", "PROXY TCP4 1.2.3.4 5.6.7.8 0x10 1\r\n", NP_EPORT),
	V1_ERR("one port only", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", NP_EPORT),

	/* Exactly one space between tokens, none at the end. */
	V1_ERR("double space after PROXY", "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NP_EFAMILY),
	V1_ERR("double space after TCP4", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", NP_EADDRESS),
	V1_ERR("double space between addresses", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", NP_EADDRESS),
	V1_ERR("double space before source port", "PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n", NP_EPORT),
	V1_ERR("double space between ports", "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", NP_EPORT),
	V1_ERR("space before CRLF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", NP_ELINE),
	V1_ERR("a seventh token", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", NP_ELINE),
	V1_ERR("tab instead of space after PROXY", "PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", NP_ENOTPROXY),
	V1_ERR("tab instead of space after TCP4", "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", NP_EFAMILY),

	/* The line ends with CRLF and nothing else. */
	V1_ERR("lone CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rGET / HTTP/1.0\r\n", NP_ELINE),
	V1_ERR("lone LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET / HTTP/1.0\r\n", NP_ELINE),
	V1_ERR("LF CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r", NP_ELINE),
	V1_ERR("CR inside UNKNOWN's ignored part", "PROXY UNKNOWN a\rb\r\n", NP_ELINE),
	V1_ERR("LF inside UNKNOWN's ignored part", "PROXY UNKNOWN a\nb\r\n", NP_ELINE),

	/* Tokens are case-sensitive. */
	V1_ERR("lower case proxy", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NP_ENOTPROXY),
	V1_ERR("PROXy", "PROXy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NP_ENOTPROXY),
	V1_ERR("lower case tcp4", "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", NP_EFAMILY),
	V1_ERR("TCP5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", NP_EFAMILY),
	V1_ERR("UDP4", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", NP_EFAMILY),
	V1_ERR("UNKNOWNxyz", "PROXY UNKNOWNxyz\r\n", NP_EFAMILY),
	V1_ERR("empty protocol", "PROXY \r\n", NP_EFAMILY),
	/* A known token without its addresses: the line, not the family, is wrong. */
	V1_ERR("TCP4 and nothing else", "PROXY TCP4\r\n", NP_ELINE),
	V1_ERR("TCP6 and nothing else", "PROXY TCP6\r\n", NP_ELINE),
	V1_ERR("HTTP request", "GET / HTTP/1.0\r\n\r\n", NP_ENOTPROXY),
	V1_ERR("PROXX", "PROXX TCP4", NP_ENOTPROXY),

	/* Prefixes of a line that may still become valid: the receiver waits for CRLF (E.1). */
	V1_ERR("P", "P", NP_EAGAIN),
	V1_ERR("PROXY", "PROXY", NP_EAGAIN),
	V1_ERR("no CRLF yet", "PROXY TCP4 192.168.0.1", NP_EAGAIN),
	V1_ERR("CR but no LF yet", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", NP_EAGAIN),
	V1_ERR("addresses are judged at CRLF only", "PROXY TCP4 999.1.1.1", NP_EAGAIN),
	V1_ERR("PROXY T", "PROXY T", NP_EAGAIN),
	V1_ERR("PROXY UNKNOWN without CRLF", "PROXY UNKNOWN", NP_EAGAIN),
	V1_ERR("PROXY UNKNOWN, ignored part without CRLF", "PROXY UNKNOWN whatever", NP_EAGAIN),

	/* But the protocol token and a lone LF are judged as they arrive (E.1). */
	V1_ERR("TCP5 before CRLF", "PROXY TCP5", NP_EFAMILY),
	V1_ERR("X before CRLF", "PROXY X", NP_EFAMILY),
	V1_ERR("tcp4 before CRLF", "PROXY tcp4", NP_EFAMILY),
	V1_ERR("UNKNOWNx before CRLF", "PROXY UNKNOWNx", NP_EFAMILY),
	V1_ERR("double space before CRLF", "PROXY  ", NP_EFAMILY),
	V1_ERR("lone LF before any CR", "PROXY TCP4 1.2\n", NP_ELINE),
	V1_ERR("lone LF in UNKNOWN before any CR", "PROXY UNKNOWN a\nb", NP_ELINE),
};

static void addr_bytes(int af, const char *text, uint8_t out[16])
{
	memset(out, 0, 16);
	if (inet_pton(af, text, out) != 1)
		diag("bad address in the test table: %s", text);
}

static void test_v1_table(void)
{
	static char in[512];

	for (size_t i = 0; i < ARRAY_LEN(v1_cases); i++) {
		const struct v1_case *c = &v1_cases[i];
		size_t hlen = strlen(c->head), tlen = strlen(c->tail);
		struct np_header h;

		memcpy(in, c->head, hlen);
		memcpy(in + hlen, c->tail, tlen);
		int r = parse_poisoned(in, hlen + tlen, &h);

		if (c->want != 0) {
			is_int(r, c->want, "v1 %s: %s", c->name, np_errname(c->want));
			ok(hdr_untouched(&h), "v1 %s: header untouched", c->name);
			continue;
		}
		/* Only the header is consumed; the application data stays. */
		is_int(r, hlen, "v1 %s: returns the line length", c->name);
		if (r <= 0)
			continue;
		int fields = h.version == 1 && h.v1_proto == c->proto;
		if (c->proto == NP_V1_UNKNOWN) {
			fields = fields && h.command == NP_CMD_LOCAL && h.family == NP_AF_UNSPEC &&
				 h.transport == NP_TRANSPORT_UNSPEC && !np_has_addresses(&h);
		} else {
			int af = c->proto == NP_V1_TCP4 ? AF_INET : AF_INET6;
			size_t alen = c->proto == NP_V1_TCP4 ? 4 : 16;
			uint8_t s[16], d[16];

			addr_bytes(af, c->src, s);
			addr_bytes(af, c->dst, d);
			fields = fields && h.command == NP_CMD_PROXY &&
				 h.family == (c->proto == NP_V1_TCP4 ? NP_AF_INET : NP_AF_INET6) &&
				 h.transport == NP_TRANSPORT_STREAM && memcmp(h.src.ip6, s, alen) == 0 &&
				 memcmp(h.dst.ip6, d, alen) == 0 && h.src.port == c->sport && h.dst.port == c->dport;
		}
		fields = fields && h.tlv_len == 0;
		ok(fields, "v1 %s: fields", c->name);

		/* Eager checks must never reject what is still a prefix of this valid line. */
		size_t bad_prefix = 0;
		for (size_t k = 1; k < hlen; k++)
			if (np_parse(in, k, &h) != NP_EAGAIN)
				bad_prefix++;
		ok(bad_prefix == 0, "v1 %s: every prefix is NP_EAGAIN", c->name);
	}
}

/* The lengths the specification computes in 2.1 are those of our table's lines. */
static void test_v1_spec_lengths(void)
{
	is_int(strlen(v1_cases[1].head), 56, "spec 2.1: TCP4 maximum is 56 bytes");
	is_int(strlen(v1_cases[2].head), 104, "spec 2.1: TCP6 maximum is 104 bytes");
	is_int(strlen(v1_cases[3].head), 15, "spec 2.1: UNKNOWN short form is 15 bytes");
	is_int(strlen(v1_cases[4].head), 107, "spec 2.1: worst case is 107 bytes");
}

/* "PROXY UNKNOWN " and filler up to a line of exactly n bytes, CRLF included. */
static size_t unknown_line(char *out, size_t n)
{
	static const char head[] = "PROXY UNKNOWN ";
	size_t hl = sizeof(head) - 1;

	memcpy(out, head, hl);
	memset(out + hl, 'f', n - hl - 2);
	out[n - 2] = '\r';
	out[n - 1] = '\n';
	return n;
}

/*
 * The 107-byte limit (2.1): a line of 107 bytes is valid, one of 108 is not,
 * and a receiver knows a line is too long as soon as byte 106 is not its CR.
 */
static void test_v1_length_limit(void)
{
	char line[200];
	struct np_header h;

	for (size_t n = 100; n <= 112; n++) {
		unknown_line(line, n);
		int r = np_parse(line, n, &h);
		if (n <= NP_V1_MAX_LEN)
			is_int(r, n, "v1 UNKNOWN line of %zu bytes is valid", n);
		else
			is_int(r, NP_ETOOLONG, "v1 UNKNOWN line of %zu bytes is too long", n);
	}

	/* No CR at all: 105 bytes may still end in time, 106 cannot. */
	memset(line, 'f', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	is_int(np_parse(line, 105, &h), NP_EAGAIN, "105 bytes without CR: still incomplete");
	is_int(np_parse(line, 106, &h), NP_ETOOLONG, "106 bytes without CR: too long already");
	is_int(np_parse(line, 200, &h), NP_ETOOLONG, "200 bytes without CR: too long");

	/* CR as byte 106: the 107th byte decides. */
	line[105] = '\r';
	is_int(np_parse(line, 106, &h), NP_EAGAIN, "CR as the 106th byte: waits for LF");
	line[106] = '\n';
	is_int(np_parse(line, 107, &h), 107, "CRLF ending at byte 107: valid");
	line[106] = 'x';
	is_int(np_parse(line, 107, &h), NP_ELINE, "CR then x at byte 107: lone CR");

	/* A TCP6 line padded to 108 bytes cannot exist; its 108-byte neighbour is too long. */
	const char *l108 =
		"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535    \r\n";
	is_int(strlen(l108), 108, "the padded TCP6 line has 108 bytes");
	is_int(np_parse(l108, strlen(l108), &h), NP_ETOOLONG, "TCP6 line of 108 bytes: NP_ETOOLONG");
}

/* Every strict prefix of a valid line is incomplete, never an error. */
static void test_v1_prefixes(void)
{
	const char *line = v1_cases[0].head;
	size_t n = strlen(line), bad = 0;
	struct np_header h;

	for (size_t k = 1; k < n; k++) {
		int r = parse_poisoned(line, k, &h);
		if (r != NP_EAGAIN || !hdr_untouched(&h)) {
			diag("prefix of %zu bytes: %s", k, np_errname(r));
			bad++;
		}
	}
	ok(bad == 0, "every prefix of the spec example is NP_EAGAIN and leaves hdr alone");
	is_int(np_parse(line, 0, &h), NP_EAGAIN, "zero bytes: NP_EAGAIN");
}

/* np_parse_max: a cap below 107 turns a longer line into NP_ETOOBIG. */
static void test_v1_parse_max(void)
{
	const char *line = v1_cases[0].head; /* 47 bytes */
	size_t n = strlen(line);
	struct np_header h;

	is_int(np_parse_max(line, n, n, &h), n, "v1: cap equal to the line length");
	is_int(np_parse_max(line, n, n - 1, &h), NP_ETOOBIG, "v1: cap one below the line length");
	is_int(np_parse_max(line, 25, 20, &h), NP_ETOOBIG, "v1: cap 20 known exceeded after 25 bytes");
	is_int(np_parse_max(line, 10, 20, &h), NP_EAGAIN, "v1: cap 20 not yet exceeded after 10 bytes");

	char l108[120];
	unknown_line(l108, 108);
	is_int(np_parse_max(l108, 108, 4096, &h), NP_ETOOLONG, "v1: a cap above 107 keeps NP_ETOOLONG");
}

/* ------------------------------------------------------------------------ */
/* v2                                                                       */
/* ------------------------------------------------------------------------ */

/*
 * Section 2.2's layout, byte by byte: the spec 2.1 example connection
 * (192.168.0.1:56324 -> 192.168.0.11:443) as TCP over IPv4.
 */
static const uint8_t v2_tcp4_example[] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, /* signature */
	0x21,									/* v2, PROXY */
	0x11,									/* INET, STREAM */
	0x00, 0x0C,								/* len 12 */
	0xC0, 0xA8, 0x00, 0x01,							/* src 192.168.0.1 */
	0xC0, 0xA8, 0x00, 0x0B,							/* dst 192.168.0.11 */
	0xDC, 0x04,								/* sport 56324 */
	0x01, 0xBB,								/* dport 443 */
};

/* TCP over IPv6, 2001:db8::1 port 1234 -> 2001:db8::2 port 80, then "HELLO". */
static const uint8_t v2_tcp6_example[] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x21, 0x00, 0x24,
	0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
	0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
	0x04, 0xD2, 0x00, 0x50,
	'H', 'E', 'L', 'L', 'O',
};

static void test_v2_examples(void)
{
	struct np_header h;
	int r;

	r = np_parse(v2_tcp4_example, sizeof(v2_tcp4_example), &h);
	is_int(r, 28, "v2 TCP4 example: 16 + 12 bytes");
	static const uint8_t s4[4] = {192, 168, 0, 1}, d4[4] = {192, 168, 0, 11};
	ok(r > 0 && h.version == 2 && h.command == NP_CMD_PROXY && h.family == NP_AF_INET &&
		   h.transport == NP_TRANSPORT_STREAM && h.v1_proto == NP_V1_NONE && memcmp(h.src.ip4, s4, 4) == 0 &&
		   memcmp(h.dst.ip4, d4, 4) == 0 && h.src.port == 56324 && h.dst.port == 443 && h.tlv_len == 0,
	   "v2 TCP4 example: fields");

	r = np_parse(v2_tcp6_example, sizeof(v2_tcp6_example), &h);
	is_int(r, 52, "v2 TCP6 example followed by data: 16 + 36 bytes, not the data");
	uint8_t s6[16], d6[16];
	addr_bytes(AF_INET6, "2001:db8::1", s6);
	addr_bytes(AF_INET6, "2001:db8::2", d6);
	ok(r > 0 && h.command == NP_CMD_PROXY && h.family == NP_AF_INET6 && h.transport == NP_TRANSPORT_STREAM &&
		   memcmp(h.src.ip6, s6, 16) == 0 && memcmp(h.dst.ip6, d6, 16) == 0 && h.src.port == 1234 &&
		   h.dst.port == 80 && h.tlv_len == 0,
	   "v2 TCP6 example: fields");

	/* UNIX: two 108-byte paths, NUL-padded; a path may fill all 108 bytes. */
	uint8_t block[216];
	memset(block, 0, sizeof(block));
	memcpy(block, "/var/run/src.sock", 17);
	memset(block + 108, 'd', 108);
	size_t n = v2(wire, 0x21, 0x31, block, sizeof(block));
	memcpy(wire + n, "HELLO", 5);
	r = np_parse(wire, n + 5, &h);
	is_int(r, 16 + 216, "v2 UNIX stream: 16 + 216 bytes");
	ok(r > 0 && h.family == NP_AF_UNIX && h.transport == NP_TRANSPORT_STREAM &&
		   memcmp(h.src.path, block, 108) == 0 && memcmp(h.dst.path, block + 108, 108) == 0,
	   "v2 UNIX stream: both paths, the unterminated one whole");

	/* LOCAL as the spec recommends: UNSPEC, len 0. */
	n = v2(wire, 0x20, 0x00, NULL, 0);
	memcpy(wire + n, "GET /", 5);
	r = np_parse(wire, n + 5, &h);
	is_int(r, 16, "v2 LOCAL health check: 16 bytes");
	ok(r > 0 && h.command == NP_CMD_LOCAL && h.family == NP_AF_UNSPEC && !np_has_addresses(&h) &&
		   h.tlv_len == 0,
	   "v2 LOCAL: no addresses");

	/* Every strict prefix waits, whatever the byte it stops at. */
	size_t bad = 0;
	for (size_t k = 1; k < sizeof(v2_tcp4_example); k++) {
		r = parse_poisoned(v2_tcp4_example, k, &h);
		if (r != NP_EAGAIN || !hdr_untouched(&h)) {
			diag("prefix of %zu bytes: %s", k, np_errname(r));
			bad++;
		}
	}
	ok(bad == 0, "every prefix of the v2 TCP4 example is NP_EAGAIN and leaves hdr alone");
}

/*
 * The family/transport byte (2.2) under PROXY and LOCAL: the seven listed
 * bytes, the nibble-valid unlisted ones (errors under PROXY, payload skipped
 * under LOCAL, checklist E.3/E.4), and invalid nibbles (rejected under both, C9).
 */
struct fam_case {
	uint8_t fam;
	int block;	/* address block size, -1 when unlisted */
	int proxy_want; /* 0: valid */
	int local_want;
};

static const struct fam_case fam_cases[] = {
	{0x00, 0, 0, 0},
	{0x11, 12, 0, 0},
	{0x12, 12, 0, 0},
	{0x21, 36, 0, 0},
	{0x22, 36, 0, 0},
	{0x31, 216, 0, 0},
	{0x32, 216, 0, 0},
	{0x01, -1, NP_EFAMILY, 0},
	{0x02, -1, NP_EFAMILY, 0},
	{0x10, -1, NP_EFAMILY, 0},
	{0x20, -1, NP_EFAMILY, 0},
	{0x30, -1, NP_EFAMILY, 0},
	{0x40, -1, NP_EFAMILY, NP_EFAMILY},
	{0x41, -1, NP_EFAMILY, NP_EFAMILY},
	{0xF1, -1, NP_EFAMILY, NP_EFAMILY},
	{0x03, -1, NP_ETRANSPORT, NP_ETRANSPORT},
	{0x13, -1, NP_ETRANSPORT, NP_ETRANSPORT},
	{0x1F, -1, NP_ETRANSPORT, NP_ETRANSPORT},
	{0x33, -1, NP_ETRANSPORT, NP_ETRANSPORT},
	/* Both nibbles invalid: the family is reported (our choice, documented here). */
	{0x43, -1, NP_EFAMILY, NP_EFAMILY},
};

static void test_v2_families(void)
{
	/* 7 bytes that are no TLV list: a receiver that parsed them as TLVs would fail. */
	static const uint8_t garbage[7] = {'g', 'a', 'r', 'b', 'a', 'g', 'e'};
	static const uint8_t noop[5] = {0x04, 0x00, 0x02, 0xAA, 0xBB};
	uint8_t payload[300];

	for (size_t i = 0; i < ARRAY_LEN(fam_cases); i++) {
		const struct fam_case *c = &fam_cases[i];

		for (int cmd = NP_CMD_LOCAL; cmd <= NP_CMD_PROXY; cmd++) {
			const char *cname = cmd == NP_CMD_PROXY ? "PROXY" : "LOCAL";
			int want = cmd == NP_CMD_PROXY ? c->proxy_want : c->local_want;
			size_t plen;

			if (c->block >= 0) {
				/* Distinct bytes in the block, then one NOOP TLV after it. */
				for (int k = 0; k < c->block; k++)
					payload[k] = (uint8_t)(k + 1);
				memcpy(payload + c->block, noop, sizeof(noop));
				plen = (size_t)c->block + sizeof(noop);
			} else {
				memcpy(payload, garbage, sizeof(garbage));
				plen = sizeof(garbage);
			}
			size_t n = v2(wire, (uint8_t)(0x20 | cmd), c->fam, payload, plen);
			memcpy(wire + n, "DATA", 4);

			struct np_header h;
			int r = parse_poisoned(wire, n + 4, &h);
			if (want) {
				is_int(r, want, "v2 %s fam 0x%02x: %s", cname, c->fam, np_errname(want));
				/* The fam byte alone decides: 14 bytes are enough to know. */
				is_int(np_parse(wire, 14, &h), want, "v2 %s fam 0x%02x: rejected at byte 14", cname,
				       c->fam);
				continue;
			}
			is_int(r, n, "v2 %s fam 0x%02x: accepted, length 16 + len", cname, c->fam);
			if (r <= 0)
				continue;
			int fields = h.version == 2 && h.command == cmd && h.family == c->fam >> 4 &&
				     h.transport == (c->fam & 0xF);
			if (c->block >= 0) {
				/* TLVs start after the block, for LOCAL too (E.4). */
				fields = fields && h.tlv == wire + 16 + c->block && h.tlv_len == sizeof(noop);
			} else {
				/* LOCAL with an unlisted family: the whole payload is skipped. */
				fields = fields && h.tlv_len == 0;
			}
			if (cmd == NP_CMD_PROXY && c->block > 0) {
				if (c->fam >> 4 == NP_AF_INET)
					fields = fields && memcmp(h.src.ip4, payload, 4) == 0 &&
						 memcmp(h.dst.ip4, payload + 4, 4) == 0 &&
						 h.src.port == (9 << 8 | 10) && h.dst.port == (11 << 8 | 12);
				else if (c->fam >> 4 == NP_AF_INET6)
					fields = fields && memcmp(h.src.ip6, payload, 16) == 0 &&
						 memcmp(h.dst.ip6, payload + 16, 16) == 0 &&
						 h.src.port == (33 << 8 | 34) && h.dst.port == (35 << 8 | 36);
				else
					fields = fields && memcmp(h.src.path, payload, 108) == 0 &&
						 memcmp(h.dst.path, payload + 108, 108) == 0;
			}
			fields = fields && np_has_addresses(&h) == (cmd == NP_CMD_PROXY && c->fam != 0x00);
			ok(fields, "v2 %s fam 0x%02x: fields", cname, c->fam);
		}
	}

	/* LOCAL, listed family, len shorter than its block: skipped whole (E.4). */
	size_t n = v2(wire, 0x20, 0x11, garbage, sizeof(garbage));
	struct np_header h;
	int r = np_parse(wire, n, &h);
	is_int(r, n, "v2 LOCAL fam 0x11 with len 7 < 12: accepted");
	ok(r > 0 && h.tlv_len == 0, "v2 LOCAL fam 0x11 with len 7: payload skipped");

	/* LOCAL, UNSPEC: the payload is a TLV area from byte 16 on, and must be one. */
	n = v2(wire, 0x20, 0x00, garbage, sizeof(garbage));
	is_int(np_parse(wire, n, &h), NP_ETLV, "v2 LOCAL fam 0x00 with a non-TLV payload: NP_ETLV");
	n = v2(wire, 0x20, 0x00, noop, sizeof(noop));
	r = np_parse(wire, n, &h);
	ok(r == (int)n && h.tlv == wire + 16 && h.tlv_len == sizeof(noop), "v2 LOCAL fam 0x00 with one TLV");

	/* PROXY UNSPEC with TLVs: accepted (C11/E.3), no addresses. */
	n = v2(wire, 0x21, 0x00, noop, sizeof(noop));
	r = np_parse(wire, n, &h);
	ok(r == (int)n && !np_has_addresses(&h) && h.tlv_len == sizeof(noop), "v2 PROXY fam 0x00 with one TLV");
}

/* All 256 fam bytes under both commands against the rule of 2.2 and E.3/E.4. */
static void test_v2_fam_sweep(void)
{
	static uint8_t zeros[216]; /* a valid block for every listed family, then type-0 TLVs */

	for (int cmd = NP_CMD_LOCAL; cmd <= NP_CMD_PROXY; cmd++) {
		int bad = 0;

		for (int fam = 0; fam < 256; fam++) {
			int hi = fam >> 4, lo = fam & 0xF, want;
			int listed = fam == 0x00 || ((hi >= 1 && hi <= 3) && (lo == 1 || lo == 2));

			if (hi > 3)
				want = NP_EFAMILY;
			else if (lo > 2)
				want = NP_ETRANSPORT;
			else if (cmd == NP_CMD_PROXY && !listed)
				want = NP_EFAMILY;
			else
				want = 16 + (int)sizeof(zeros);

			size_t n = v2(wire, (uint8_t)(0x20 | cmd), (uint8_t)fam, zeros, sizeof(zeros));
			struct np_header h;
			int r = np_parse(wire, n, &h);
			if (r != want) {
				diag("fam 0x%02x: got %s, want %s", fam, np_errname(r), np_errname(want));
				bad++;
			}
		}
		ok(bad == 0, "v2 %s: all 256 fam bytes judged as 2.2 says", cmd ? "PROXY" : "LOCAL");
	}
}

static void test_v2_ver_cmd(void)
{
	static const struct {
		uint8_t ver_cmd;
		int want;
	} cases[] = {
		{0x20, 16}, {0x21, 16}, {0x22, NP_ECOMMAND}, {0x23, NP_ECOMMAND}, {0x25, NP_ECOMMAND},
		{0x2F, NP_ECOMMAND}, {0x00, NP_EVERSION}, {0x10, NP_EVERSION}, {0x11, NP_EVERSION},
		{0x31, NP_EVERSION}, {0xF1, NP_EVERSION},
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct np_header h;
		size_t n = v2(wire, cases[i].ver_cmd, 0x00, NULL, 0);

		is_int(np_parse(wire, n, &h), cases[i].want, "v2 ver_cmd 0x%02x", cases[i].ver_cmd);
		if (cases[i].want < 0)
			is_int(np_parse(wire, 13, &h), cases[i].want, "v2 ver_cmd 0x%02x: judged at byte 13",
			       cases[i].ver_cmd);
	}
}

/* Any byte of the signature wrong: not PROXY, as soon as that byte is seen. */
static void test_v2_signature(void)
{
	int bad = 0;

	for (size_t i = 0; i < 12; i++) {
		struct np_header h;
		size_t n = v2(wire, 0x21, 0x11, v2_tcp4_example + 16, 12);

		wire[i] ^= 0x80;
		if (np_parse(wire, n, &h) != NP_ENOTPROXY || np_parse(wire, i + 1, &h) != NP_ENOTPROXY) {
			diag("signature byte %zu", i);
			bad++;
		}
	}
	ok(bad == 0, "v2: a wrong signature byte is NP_ENOTPROXY, at once");

	/* The spec's own warning (C1): the NUL at byte 4 is part of the signature. */
	struct np_header h;
	is_int(np_parse("\r\n\r\n", 4, &h), NP_EAGAIN, "v2: four signature bytes wait");
	is_int(np_parse("\r\n\r\nX", 5, &h), NP_ENOTPROXY, "v2: no NUL at byte 4");
	is_int(np_parse("\r\nGET", 5, &h), NP_ENOTPROXY, "v2: CRLF then something else");
}

static void test_v2_short_and_big(void)
{
	static const struct {
		uint8_t fam;
		size_t len;
	} shorts[] = {{0x11, 11}, {0x12, 0}, {0x21, 35}, {0x22, 12}, {0x31, 215}, {0x32, 36}};
	static uint8_t payload[216];
	struct np_header h;

	for (size_t i = 0; i < ARRAY_LEN(shorts); i++) {
		size_t n = v2(wire, 0x21, shorts[i].fam, payload, shorts[i].len);

		is_int(np_parse(wire, n, &h), NP_ESHORT, "v2 PROXY fam 0x%02x len %zu: NP_ESHORT", shorts[i].fam,
		       shorts[i].len);
		/* len is known after 16 bytes: no need to wait for the rest. */
		is_int(np_parse(wire, 16, &h), NP_ESHORT, "v2 PROXY fam 0x%02x len %zu: known at byte 16",
		       shorts[i].fam, shorts[i].len);
	}

	/* np_parse_max: the announced length against the cap, at byte 16. */
	uint8_t tl[100];
	memset(tl, 0, sizeof(tl));
	size_t n = v2(wire, 0x21, 0x11, tl, 12 + 99 - 12); /* 12-byte block + 29 empty TLVs */
	is_int(n, 115, "v2 header of 115 bytes built");
	is_int(np_parse_max(wire, n, 115, &h), 115, "np_parse_max: cap equal to the header");
	is_int(np_parse_max(wire, n, 114, &h), NP_ETOOBIG, "np_parse_max: cap one byte short");
	is_int(np_parse_max(wire, 16, 114, &h), NP_ETOOBIG, "np_parse_max: refused after 16 bytes");
	is_int(np_parse_max(wire, 15, 114, &h), NP_EAGAIN, "np_parse_max: 15 bytes cannot tell yet");

	/* The largest header np_parse() takes: len 65535, 16 + 65535 bytes. */
	memset(wire, 0, sizeof(wire));
	n = v2(wire, 0x20, 0x00, NULL, 0);
	store16(wire + 14, 0xFFFF);
	wire[16] = NP_TLV_NOOP;
	store16(wire + 17, 0xFFFF - 3);
	is_int(np_parse(wire, NP_V2_MAX_LEN, &h), NP_V2_MAX_LEN, "v2 of the maximum length 65551");
	is_int(np_parse(wire, NP_V2_MAX_LEN - 1, &h), NP_EAGAIN, "v2 of the maximum length, one byte missing");
	is_int(np_parse_max(wire, NP_V2_MAX_LEN, 4096, &h), NP_ETOOBIG, "v2 of the maximum length under a 4 KB cap");
}

struct tlv_case {
	const char *name;
	uint8_t type;
	size_t len;
	const char *value; /* NULL: len bytes of 'x' */
	int want;	   /* 0: valid */
};

/* TLV values the receiver checks (E.5): CRC32C length, UNIQUE_ID length, SSL layout. */
static const struct tlv_case tlv_cases[] = {
	{"CRC32C of length 2", NP_TLV_CRC32C, 2, NULL, NP_ETLVVALUE},
	{"CRC32C of length 0", NP_TLV_CRC32C, 0, NULL, NP_ETLVVALUE},
	{"CRC32C of length 5", NP_TLV_CRC32C, 5, NULL, NP_ETLVVALUE},
	{"UNIQUE_ID of 128 bytes", NP_TLV_UNIQUE_ID, 128, NULL, 0},
	{"UNIQUE_ID of 129 bytes", NP_TLV_UNIQUE_ID, 129, NULL, NP_ETLVVALUE},
	{"UNIQUE_ID empty", NP_TLV_UNIQUE_ID, 0, NULL, 0},
	{"SSL of 4 bytes", NP_TLV_SSL, 4, "\x01\x00\x00\x00", NP_ETLVVALUE},
	{"SSL of 0 bytes", NP_TLV_SSL, 0, NULL, NP_ETLVVALUE},
	{"SSL of 5 bytes, no sub-TLV", NP_TLV_SSL, 5, "\x01\x00\x00\x00\x00", 0},
	{"SSL with a version sub-TLV", NP_TLV_SSL, 15, "\x01\x00\x00\x00\x00\x21\x00\x07TLSv1.3", 0},
	{"SSL sub-TLV longer than the rest", NP_TLV_SSL, 9, "\x01\x00\x00\x00\x00\x21\x00\x05T", NP_ETLVVALUE},
	{"SSL with 2 stray bytes after its sub-TLVs", NP_TLV_SSL, 10, "\x01\x00\x00\x00\x00\x21\x00\x00\x22\x00",
	 NP_ETLVVALUE},
	{"SSL with one stray byte", NP_TLV_SSL, 6, "\x01\x00\x00\x00\x00\x21", NP_ETLVVALUE},
	{"unknown type 0x00", 0x00, 3, NULL, 0},
	{"experimental type 0xF0", 0xF0, 10, NULL, 0},
	{"future type 0xFF", 0xFF, 0, NULL, 0},
	{"AUTHORITY of 300 bytes", NP_TLV_AUTHORITY, 300, NULL, 0},
	{"NETNS", NP_TLV_NETNS, 4, "blue", 0},
};

static void test_v2_tlv_values(void)
{
	static uint8_t payload[1024], value[512];

	for (size_t i = 0; i < ARRAY_LEN(tlv_cases); i++) {
		const struct tlv_case *c = &tlv_cases[i];
		struct np_header h;
		size_t p = 12;

		memset(payload, 7, 12);
		if (c->value)
			memcpy(value, c->value, c->len);
		else
			memset(value, 'x', c->len);
		p += tlv(payload + p, NP_TLV_NOOP, "ab", 2);
		p += tlv(payload + p, c->type, value, c->len);
		size_t n = v2(wire, 0x21, 0x11, payload, p);
		int r = np_parse(wire, n, &h);
		if (c->want)
			is_int(r, c->want, "v2 TLV %s: %s", c->name, np_errname(c->want));
		else
			is_int(r, n, "v2 TLV %s: accepted", c->name);
	}
}

/* The TLV area must tile 16 + len exactly (C23). */
static void test_v2_tlv_structure(void)
{
	static const struct {
		const char *name;
		size_t len;
		const char *bytes;
		int want;
	} cases[] = {
		{"one byte", 1, "\x04", NP_ETLV},
		{"two bytes", 2, "\x04\x00", NP_ETLV},
		{"length past the end", 5, "\x04\x00\x03xy", NP_ETLV},
		{"length 0xFFFF", 4, "\x04\xFF\xFFx", NP_ETLV},
		{"a valid TLV then one byte", 7, "\x04\x00\x00\x04\x00\x00\x01", NP_ETLV},
		{"two empty TLVs", 6, "\x04\x00\x00\x04\x00\x00", 0},
		{"a value with NUL bytes", 6, "\x01\x00\x03\x00h\x00", 0},
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		static uint8_t payload[64];
		struct np_header h;

		memset(payload, 1, 12);
		memcpy(payload + 12, cases[i].bytes, cases[i].len);
		size_t n = v2(wire, 0x21, 0x11, payload, 12 + cases[i].len);
		int r = np_parse(wire, n, &h);
		if (cases[i].want)
			is_int(r, cases[i].want, "v2 TLV area %s: %s", cases[i].name, np_errname(cases[i].want));
		else
			ok(r == (int)n && h.tlv == wire + 28 && h.tlv_len == cases[i].len, "v2 TLV area %s: accepted",
			   cases[i].name);
	}
}

/*
 * CRC32C (2.2.3): over the whole header with the value zeroed, stored
 * big-endian; its place in the list is free (HAProxy first, nginx last).
 */
static void test_v2_crc(void)
{
	static const char id[] = "vpce-08d2bf15fac5001c9";
	uint8_t payload[128], vpce[32];
	struct np_header h;

	for (int last = 0; last <= 1; last++) {
		const char *where = last ? "last" : "first";
		size_t p = 0, crc_at = 0;

		memcpy(payload, v2_tcp4_example + 16, 12);
		p = 12;
		vpce[0] = 0x01;
		memcpy(vpce + 1, id, sizeof(id) - 1);
		if (!last) {
			crc_at = 16 + p + 3;
			p += tlv(payload + p, NP_TLV_CRC32C, "\0\0\0\0", 4);
		}
		p += tlv(payload + p, NP_TLV_AWS, vpce, sizeof(id));
		p += tlv(payload + p, NP_TLV_NOOP, "\0\0\0\0\0\0", 6);
		if (last) {
			crc_at = 16 + p + 3;
			p += tlv(payload + p, NP_TLV_CRC32C, "\0\0\0\0", 4);
		}
		size_t n = v2(wire, 0x21, 0x11, payload, p);
		uint32_t crc = ref_crc32c(wire, n);
		store32(wire + crc_at, crc);
		memcpy(wire + n, "app data is not summed", 22);

		is_int(np_parse(wire, n + 22, &h), n, "v2 CRC32C %s: valid", where);
		/* Little-endian storage is a mistake, not an alternative. */
		wire[crc_at] = (uint8_t)crc;
		wire[crc_at + 1] = (uint8_t)(crc >> 8);
		wire[crc_at + 2] = (uint8_t)(crc >> 16);
		wire[crc_at + 3] = (uint8_t)(crc >> 24);
		is_int(np_parse(wire, n, &h), NP_ECRC, "v2 CRC32C %s stored little-endian: NP_ECRC", where);
		store32(wire + crc_at, crc ^ 1);
		is_int(np_parse(wire, n, &h), NP_ECRC, "v2 CRC32C %s off by one bit: NP_ECRC", where);
		store32(wire + crc_at, crc);
		wire[n - 1] ^= 0x01; /* a NOOP byte or the CRC: either way a mismatch */
		is_int(np_parse(wire, n, &h), NP_ECRC, "v2 CRC32C %s, last header byte changed: NP_ECRC", where);
		wire[n - 1] ^= 0x01;
		wire[20] ^= 0x01; /* the source address */
		is_int(np_parse(wire, n, &h), NP_ECRC, "v2 CRC32C %s, address changed: NP_ECRC", where);
	}

	/* CRC32C in a LOCAL header: the checksum is checked there too. */
	size_t n = v2(wire, 0x20, 0x00, NULL, 0);
	n += tlv(wire + n, NP_TLV_CRC32C, "\0\0\0\0", 4);
	store16(wire + 14, 7);
	store32(wire + 19, ref_crc32c(wire, n));
	is_int(np_parse(wire, n, &h), n, "v2 LOCAL with CRC32C: valid");
	wire[19] ^= 0xFF;
	is_int(np_parse(wire, n, &h), NP_ECRC, "v2 LOCAL with a wrong CRC32C: NP_ECRC");
}

/* A header followed by application data, including a second header (AWS NLB does that). */
static void test_v2_trailing_data(void)
{
	struct np_header h;
	size_t n = sizeof(v2_tcp4_example);

	memcpy(wire, v2_tcp4_example, n);
	memcpy(wire + n, v2_tcp4_example, n);
	is_int(np_parse(wire, 2 * n, &h), n, "v2 header followed by another: only the first is consumed");
	memcpy(wire + n, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 32);
	is_int(np_parse(wire, n + 32, &h), n, "v2 header followed by a v1 line: only the v2 is consumed");
	memcpy(wire, "PROXY UNKNOWN\r\n", 15);
	memcpy(wire + 15, v2_tcp4_example, n);
	is_int(np_parse(wire, 15 + n, &h), 15, "v1 UNKNOWN followed by a v2 header: 15 bytes");
}

/* ------------------------------------------------------------------------ */
/* error names and sentences                                                */
/* ------------------------------------------------------------------------ */

static void test_errors(void)
{
	static const struct {
		int code;
		const char *name, *text;
	} map[] = {
#define ERR_ROW_(name, value, text) {NP_##name, "NP_" #name, text},
		NP_ERRNO_MAP(ERR_ROW_)
#undef ERR_ROW_
	};

	is_int(ARRAY_LEN(map), 20, "NP_ERRNO_MAP has 20 codes");
	for (size_t i = 0; i < ARRAY_LEN(map); i++) {
		const char *s = np_strerror(map[i].code), *e = np_errname(map[i].code);

		ok(e && strcmp(e, map[i].name) == 0, "np_errname(%d) is %s", map[i].code, map[i].name);
		ok(s && s[0] && strcmp(s, map[i].text) == 0 && strcmp(s, "unknown error") != 0,
		   "np_strerror(%s) is its sentence", map[i].name);
		/* Codes are negative, distinct and consecutive from -1: new ones are appended. */
		is_int(map[i].code, -(int)(i + 1), "%s is %d", map[i].name, -(int)(i + 1));
	}
	static const int unknown[] = {0, -999, 1, -21, 2147483647, -2147483647 - 1};
	for (size_t i = 0; i < ARRAY_LEN(unknown); i++) {
		ok(strcmp(np_strerror(unknown[i]), "unknown error") == 0, "np_strerror(%d) is \"unknown error\"",
		   unknown[i]);
		ok(strcmp(np_errname(unknown[i]), "NP_UNKNOWN") == 0, "np_errname(%d) is NP_UNKNOWN", unknown[i]);
	}
}

int main(void)
{
	test_v1_table();
	test_v1_spec_lengths();
	test_v1_length_limit();
	test_v1_prefixes();
	test_v1_parse_max();
	test_v2_examples();
	test_v2_families();
	test_v2_fam_sweep();
	test_v2_ver_cmd();
	test_v2_signature();
	test_v2_short_and_big();
	test_v2_tlv_values();
	test_v2_tlv_structure();
	test_v2_crc();
	test_v2_trailing_data();
	test_errors();
	return done_testing();
}
