/*
 * test_build.c - the builders (np_build_v1, np_build_v2), the address
 * helpers (np_format_addr, np_header_from_sockaddr, np_endpoint_to_sockaddr)
 * and round trips through the parser: parse(build(h)) == h for thousands of
 * pseudo-random headers, and build(parse(x)) == x for hand-made ones.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "netproxy.h"
#include "tap.h"
#include "reference.h"
#include "loopback.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static uint8_t out[NP_V2_MAX_LEN + 64], want[NP_V2_MAX_LEN + 64], again[NP_V2_MAX_LEN + 64];

/* The CRC32C a header whose CRC value sits at crc_at must carry. */
static uint32_t expected_crc(const uint8_t *hdr, size_t n, size_t crc_at)
{
	static uint8_t copy[NP_V2_MAX_LEN];

	memcpy(copy, hdr, n);
	memset(copy + crc_at, 0, 4);
	return ref_crc32c(copy, n);
}

/* xorshift64*: a fixed seed, so every run tests the same headers. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
	return xorshift64star(&rng_state);
}

static unsigned rnd_below(unsigned n)
{
	return (unsigned)(rnd() % n);
}

static void ep4(struct np_endpoint *ep, const char *addr, uint16_t port)
{
	memset(ep, 0, sizeof(*ep));
	if (inet_pton(AF_INET, addr, ep->ip4) != 1)
		diag("bad IPv4 in the test: %s", addr);
	ep->port = port;
}

static void ep6(struct np_endpoint *ep, const char *addr, uint16_t port)
{
	memset(ep, 0, sizeof(*ep));
	if (inet_pton(AF_INET6, addr, ep->ip6) != 1)
		diag("bad IPv6 in the test: %s", addr);
	ep->port = port;
}

static void hdr_init(struct np_header *h, uint8_t cmd, uint8_t fam, uint8_t tr)
{
	memset(h, 0, sizeof(*h));
	h->version = 2;
	h->command = cmd;
	h->family = fam;
	h->transport = tr;
}

/*
 * A builder must write nothing past cap and say NP_ENOSPC for every cap
 * below the size it needs; at exactly that size it succeeds.
 */
typedef int (*build_fn)(void *buf, size_t cap, const void *arg);

static int check_caps(build_fn fn, const void *arg, size_t n)
{
	int bad = 0;

	for (size_t cap = 0; cap <= n; cap++) {
		memset(out, 0xEE, n + 8);
		int r = fn(out, cap, arg);
		int canary = 1;
		for (size_t k = cap; k < n + 8; k++)
			canary = canary && out[k] == 0xEE;
		if (cap < n ? r != NP_ENOSPC : r != (int)n)
			bad++;
		if (!canary)
			bad++;
	}
	return bad == 0;
}

static int v1_fn(void *buf, size_t cap, const void *arg)
{
	return np_build_v1(buf, cap, arg);
}

/* ------------------------------------------------------------------------ */
/* np_build_v1                                                              */
/* ------------------------------------------------------------------------ */

static void test_build_v1(void)
{
	struct {
		const char *name;
		struct np_header h;
		const char *line;
	} cases[16];
	size_t n = 0;

	/* PROXY over INET/INET6 with STREAM: TCP4/TCP6 lines, IPv6 in RFC 5952 form. */
	hdr_init(&cases[n].h, NP_CMD_PROXY, NP_AF_INET, NP_TRANSPORT_STREAM);
	ep4(&cases[n].h.src, "192.168.0.1", 56324);
	ep4(&cases[n].h.dst, "192.168.0.11", 443);
	cases[n].name = "spec 2.1 example";
	cases[n++].line = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";

	hdr_init(&cases[n].h, NP_CMD_PROXY, NP_AF_INET, NP_TRANSPORT_STREAM);
	ep4(&cases[n].h.src, "255.255.255.255", 65535);
	ep4(&cases[n].h.dst, "255.255.255.255", 65535);
	cases[n].name = "TCP4 maximum";
	cases[n++].line = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";

	hdr_init(&cases[n].h, NP_CMD_PROXY, NP_AF_INET, NP_TRANSPORT_STREAM);
	ep4(&cases[n].h.src, "0.0.0.0", 0);
	ep4(&cases[n].h.dst, "10.0.0.100", 10);
	cases[n].name = "TCP4 zeros";
	cases[n++].line = "PROXY TCP4 0.0.0.0 10.0.0.100 0 10\r\n";

	hdr_init(&cases[n].h, NP_CMD_PROXY, NP_AF_INET6, NP_TRANSPORT_STREAM);
	ep6(&cases[n].h.src, "2001:0db8:0000:0000:0000:0000:0000:0001", 0);
	ep6(&cases[n].h.dst, "0:0:0:0:0:0:0:1", 65535);
	cases[n].name = "TCP6 compressed";
	cases[n++].line = "PROXY TCP6 2001:db8::1 ::1 0 65535\r\n";

	hdr_init(&cases[n].h, NP_CMD_PROXY, NP_AF_INET6, NP_TRANSPORT_STREAM);
	ep6(&cases[n].h.src, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	ep6(&cases[n].h.dst, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	cases[n].name = "TCP6 maximum (104 bytes)";
	cases[n++].line =
		"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

	hdr_init(&cases[n].h, NP_CMD_PROXY, NP_AF_INET6, NP_TRANSPORT_STREAM);
	ep6(&cases[n].h.src, "::ffff:192.0.2.1", 1);
	ep6(&cases[n].h.dst, "2001:DB8:0:0:1:0:0:1", 2);
	cases[n].name = "TCP6 v4-mapped in hex, first of two equal runs";
	cases[n++].line = "PROXY TCP6 ::ffff:c000:201 2001:db8::1:0:0:1 1 2\r\n";

	/* Everything else is UNKNOWN (2.1, B3). */
	static const struct {
		const char *name;
		uint8_t cmd, fam, tr;
	} unk[] = {
		{"LOCAL with INET STREAM", NP_CMD_LOCAL, NP_AF_INET, NP_TRANSPORT_STREAM},
		{"LOCAL UNSPEC", NP_CMD_LOCAL, NP_AF_UNSPEC, NP_TRANSPORT_UNSPEC},
		{"PROXY UNSPEC", NP_CMD_PROXY, NP_AF_UNSPEC, NP_TRANSPORT_UNSPEC},
		{"PROXY UNIX STREAM", NP_CMD_PROXY, NP_AF_UNIX, NP_TRANSPORT_STREAM},
		{"PROXY UNIX DGRAM", NP_CMD_PROXY, NP_AF_UNIX, NP_TRANSPORT_DGRAM},
		{"PROXY INET DGRAM", NP_CMD_PROXY, NP_AF_INET, NP_TRANSPORT_DGRAM},
		{"PROXY INET6 DGRAM", NP_CMD_PROXY, NP_AF_INET6, NP_TRANSPORT_DGRAM},
		{"PROXY INET, transport UNSPEC", NP_CMD_PROXY, NP_AF_INET, NP_TRANSPORT_UNSPEC},
	};
	for (size_t i = 0; i < ARRAY_LEN(unk); i++) {
		hdr_init(&cases[n].h, unk[i].cmd, unk[i].fam, unk[i].tr);
		ep4(&cases[n].h.src, "192.0.2.1", 1);
		ep4(&cases[n].h.dst, "192.0.2.2", 2);
		cases[n].name = unk[i].name;
		cases[n++].line = "PROXY UNKNOWN\r\n";
	}

	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(cases[i].line);
		int r = np_build_v1(out, sizeof(out), &cases[i].h);

		is_int(r, len, "np_build_v1 %s: length", cases[i].name);
		ok(r == (int)len && memcmp(out, cases[i].line, len) == 0, "np_build_v1 %s: \"%.*s\"", cases[i].name,
		   (int)len - 2, cases[i].line);
		ok(check_caps(v1_fn, &cases[i].h, len), "np_build_v1 %s: NP_ENOSPC below %zu, nothing past cap",
		   cases[i].name, len);
	}
}

/* ------------------------------------------------------------------------ */
/* np_build_v2                                                              */
/* ------------------------------------------------------------------------ */

struct v2_args {
	const struct np_header *h;
	const struct np_tlv *tlvs;
	size_t ntlv;
	unsigned flags;
};

static int v2_fn(void *buf, size_t cap, const void *arg)
{
	const struct v2_args *a = arg;

	return np_build_v2(buf, cap, a->h, a->tlvs, a->ntlv, a->flags);
}

/* The expected fixed part: signature, ver_cmd, fam, len. */
static size_t fixed(uint8_t *w, uint8_t ver_cmd, uint8_t fam, size_t len)
{
	memcpy(w, sig, 12);
	w[12] = ver_cmd;
	w[13] = fam;
	store16(w + 14, (unsigned)len);
	return 16;
}

static size_t put_tlv(uint8_t *w, uint8_t type, const void *v, size_t len)
{
	w[0] = type;
	store16(w + 1, (unsigned)len);
	if (len)
		memcpy(w + 3, v, len);
	return 3 + len;
}

/* The seven combinations of 2.2 under PROXY, one expected byte string each. */
static void test_build_v2_families(void)
{
	static const struct {
		uint8_t fam, tr, byte;
		size_t block;
	} fams[] = {
		{NP_AF_UNSPEC, NP_TRANSPORT_UNSPEC, 0x00, 0}, {NP_AF_INET, NP_TRANSPORT_STREAM, 0x11, 12},
		{NP_AF_INET, NP_TRANSPORT_DGRAM, 0x12, 12},   {NP_AF_INET6, NP_TRANSPORT_STREAM, 0x21, 36},
		{NP_AF_INET6, NP_TRANSPORT_DGRAM, 0x22, 36},  {NP_AF_UNIX, NP_TRANSPORT_STREAM, 0x31, 216},
		{NP_AF_UNIX, NP_TRANSPORT_DGRAM, 0x32, 216},
	};

	for (size_t i = 0; i < ARRAY_LEN(fams); i++) {
		struct np_header h;
		size_t w;

		hdr_init(&h, NP_CMD_PROXY, fams[i].fam, fams[i].tr);
		for (int k = 0; k < NP_UNIX_PATH_LEN; k++) {
			h.src.path[k] = (uint8_t)(k + 1);
			h.dst.path[k] = (uint8_t)(200 - k);
		}
		/* The union shares bytes: ports are separate fields. */
		h.src.port = 0xABCD;
		h.dst.port = 0x0102;

		w = fixed(want, 0x21, fams[i].byte, fams[i].block);
		if (fams[i].fam == NP_AF_INET) {
			memcpy(want + w, h.src.ip4, 4);
			memcpy(want + w + 4, h.dst.ip4, 4);
			memcpy(want + w + 8, "\xAB\xCD\x01\x02", 4);
		} else if (fams[i].fam == NP_AF_INET6) {
			memcpy(want + w, h.src.ip6, 16);
			memcpy(want + w + 16, h.dst.ip6, 16);
			memcpy(want + w + 32, "\xAB\xCD\x01\x02", 4);
		} else if (fams[i].fam == NP_AF_UNIX) {
			memcpy(want + w, h.src.path, 108);
			memcpy(want + w + 108, h.dst.path, 108);
		}
		w += fams[i].block;

		int r = np_build_v2(out, sizeof(out), &h, NULL, 0, 0);
		is_int(r, w, "np_build_v2 PROXY fam 0x%02x: 16 + %zu bytes", fams[i].byte, fams[i].block);
		is_mem(out, want, w, "np_build_v2 PROXY fam 0x%02x: bytes", fams[i].byte);
		struct v2_args a = {&h, NULL, 0, 0};
		ok(check_caps(v2_fn, &a, w), "np_build_v2 PROXY fam 0x%02x: NP_ENOSPC below %zu", fams[i].byte, w);

		/* LOCAL: always fam 0x00 and no block, whatever the header says (2.2, C15). */
		h.command = NP_CMD_LOCAL;
		fixed(want, 0x20, 0x00, 0);
		r = np_build_v2(out, sizeof(out), &h, NULL, 0, 0);
		ok(r == 16 && memcmp(out, want, 16) == 0, "np_build_v2 LOCAL with fam 0x%02x set: 16 bytes, fam 0x00",
		   fams[i].byte);
	}
}

static void test_build_v2_tlvs(void)
{
	static const uint8_t binary[] = {0x00, 'a', 0x00, 0x00, 'b', 0xFF, 0x00};
	const struct np_tlv tlvs[] = {
		{NP_TLV_ALPN, 2, (const uint8_t *)"h2"},
		{NP_TLV_AUTHORITY, 11, (const uint8_t *)"example.com"},
		{NP_TLV_NOOP, 0, NULL},
		{0xE5, sizeof(binary), binary},
	};
	struct np_header h;
	size_t w;
	int r;

	hdr_init(&h, NP_CMD_PROXY, NP_AF_INET, NP_TRANSPORT_STREAM);
	ep4(&h.src, "192.168.0.1", 56324);
	ep4(&h.dst, "192.168.0.11", 443);

	/* The list in its order, after the address block. */
	size_t tl = 5 + 14 + 3 + 3 + sizeof(binary);
	w = fixed(want, 0x21, 0x11, 12 + tl);
	memcpy(want + w, "\xC0\xA8\x00\x01\xC0\xA8\x00\x0B\xDC\x04\x01\xBB", 12);
	w += 12;
	w += put_tlv(want + w, NP_TLV_ALPN, "h2", 2);
	w += put_tlv(want + w, NP_TLV_AUTHORITY, "example.com", 11);
	w += put_tlv(want + w, NP_TLV_NOOP, NULL, 0);
	w += put_tlv(want + w, 0xE5, binary, sizeof(binary));
	r = np_build_v2(out, sizeof(out), &h, tlvs, ARRAY_LEN(tlvs), 0);
	is_int(r, w, "np_build_v2 with 4 TLVs: length");
	is_mem(out, want, w, "np_build_v2 with 4 TLVs: bytes, in list order");
	struct v2_args a = {&h, tlvs, ARRAY_LEN(tlvs), 0};
	ok(check_caps(v2_fn, &a, w), "np_build_v2 with 4 TLVs: NP_ENOSPC below %zu", w);

	/* LOCAL with TLVs: no block, the TLVs right after the fixed part. */
	h.command = NP_CMD_LOCAL;
	w = fixed(want, 0x20, 0x00, tl);
	w += put_tlv(want + w, NP_TLV_ALPN, "h2", 2);
	w += put_tlv(want + w, NP_TLV_AUTHORITY, "example.com", 11);
	w += put_tlv(want + w, NP_TLV_NOOP, NULL, 0);
	w += put_tlv(want + w, 0xE5, binary, sizeof(binary));
	r = np_build_v2(out, sizeof(out), &h, tlvs, ARRAY_LEN(tlvs), 0);
	ok(r == (int)w && memcmp(out, want, w) == 0, "np_build_v2 LOCAL with 4 TLVs: bytes");
	struct np_header p;
	ok(np_parse(out, w, &p) == (int)w && p.command == NP_CMD_LOCAL && p.tlv == out + 16 && p.tlv_len == tl,
	   "np_build_v2 LOCAL with TLVs parses back, TLVs from byte 16");
}

static void test_build_v2_crc(void)
{
	const struct np_tlv plain[] = {
		{NP_TLV_ALPN, 2, (const uint8_t *)"h2"},
		{NP_TLV_NOOP, 3, (const uint8_t *)"\0\0\0"},
	};
	struct np_header h, p;
	size_t w;
	int r;

	hdr_init(&h, NP_CMD_PROXY, NP_AF_INET6, NP_TRANSPORT_STREAM);
	ep6(&h.src, "2001:db8::1", 1234);
	ep6(&h.dst, "2001:db8::2", 80);

	/* No CRC32C TLV in the list: one is added in front (HAProxy's place). */
	r = np_build_v2(out, sizeof(out), &h, plain, 2, NP_BUILD_CRC32C);
	w = 16 + 36 + 7 + 5 + 6;
	is_int(r, w, "CRC32C added: length includes the 7-byte TLV");
	ok(r > 0 && out[52] == NP_TLV_CRC32C && out[53] == 0 && out[54] == 4 && out[59] == NP_TLV_ALPN,
	   "CRC32C added: first TLV, length 4, then the list");
	ok(r > 0 && load32(out + 55) == expected_crc(out, w, 55), "CRC32C added: big-endian sum with itself zeroed");
	is_int(np_parse(out, w, &p), w, "CRC32C added: the header parses");
	struct v2_args a = {&h, plain, 2, NP_BUILD_CRC32C};
	ok(check_caps(v2_fn, &a, w), "CRC32C added: NP_ENOSPC below %zu", w);

	/* One in the list, length 4: filled in place, its value ignored. */
	const struct np_tlv with[] = {
		{NP_TLV_ALPN, 2, (const uint8_t *)"h2"},
		{NP_TLV_CRC32C, 4, (const uint8_t *)"\xDE\xAD\xBE\xEF"},
		{NP_TLV_NOOP, 3, (const uint8_t *)"\0\0\0"},
	};
	r = np_build_v2(out, sizeof(out), &h, with, 3, NP_BUILD_CRC32C);
	is_int(r, w, "CRC32C in the list: same length, nothing added");
	ok(r > 0 && out[52] == NP_TLV_ALPN && out[57] == NP_TLV_CRC32C && out[64] == NP_TLV_NOOP,
	   "CRC32C in the list: kept in its place");
	ok(r > 0 && load32(out + 60) == expected_crc(out, w, 60) && load32(out + 60) != 0xDEADBEEF,
	   "CRC32C in the list: the sum replaces the given value");
	is_int(np_parse(out, w, &p), w, "CRC32C in the list: the header parses");

	/* nginx puts it last: that place works too. */
	const struct np_tlv last[] = {
		{NP_TLV_ALPN, 2, (const uint8_t *)"h2"},
		{NP_TLV_CRC32C, 4, (const uint8_t *)"\0\0\0\0"},
	};
	r = np_build_v2(out, sizeof(out), &h, last, 2, NP_BUILD_CRC32C);
	ok(r == 16 + 36 + 5 + 7 && load32(out + r - 4) == expected_crc(out, (size_t)r, (size_t)r - 4),
	   "CRC32C last in the list: filled in place");

	/* Without the flag a CRC32C TLV is the caller's bytes, sent as given. */
	r = np_build_v2(out, sizeof(out), &h, with, 3, 0);
	ok(r == (int)w && load32(out + 60) == 0xDEADBEEF, "no flag: a CRC32C TLV is copied verbatim");
	is_int(np_parse(out, w, &p), NP_ECRC, "no flag: and the receiver finds it wrong");

	/* A CRC32C TLV of another length cannot take the sum. */
	static const uint16_t bad_lens[] = {0, 2, 3, 5, 8};
	for (size_t i = 0; i < ARRAY_LEN(bad_lens); i++) {
		static const uint8_t zeros[8];
		const struct np_tlv bad[] = {{NP_TLV_CRC32C, bad_lens[i], zeros}};

		is_int(np_build_v2(out, sizeof(out), &h, bad, 1, NP_BUILD_CRC32C), NP_EINVAL,
		       "CRC32C TLV of length %u with NP_BUILD_CRC32C: NP_EINVAL", bad_lens[i]);
	}

	/* Two CRC32C TLVs: a receiver checks each, and only one can hold the sum. */
	const struct np_tlv two[] = {
		{NP_TLV_CRC32C, 4, (const uint8_t *)"\0\0\0\0"},
		{NP_TLV_ALPN, 2, (const uint8_t *)"h2"},
		{NP_TLV_CRC32C, 4, (const uint8_t *)"\0\0\0\0"},
	};
	is_int(np_build_v2(out, sizeof(out), &h, two, 3, NP_BUILD_CRC32C), NP_EINVAL,
	       "two CRC32C TLVs with NP_BUILD_CRC32C: NP_EINVAL");
	r = np_build_v2(out, sizeof(out), &h, two, 3, 0);
	ok(r == 16 + 36 + 7 + 5 + 7, "two CRC32C TLVs without the flag: the caller's bytes, built");

	/* LOCAL with the flag: the sum covers the 16 bytes and the TLV. */
	h.command = NP_CMD_LOCAL;
	r = np_build_v2(out, sizeof(out), &h, NULL, 0, NP_BUILD_CRC32C);
	ok(r == 23 && out[13] == 0x00 && out[15] == 7 && load32(out + 19) == expected_crc(out, 23, 19),
	   "LOCAL with NP_BUILD_CRC32C: 23 bytes, summed");
	is_int(np_parse(out, 23, &p), 23, "LOCAL with NP_BUILD_CRC32C parses");
}

static void test_build_v2_invalid(void)
{
	static uint8_t big[65535];
	static const struct {
		uint8_t cmd, fam, tr;
	} bad[] = {
		{NP_CMD_PROXY, NP_AF_UNSPEC, NP_TRANSPORT_STREAM}, /* 0x01 */
		{NP_CMD_PROXY, NP_AF_UNSPEC, NP_TRANSPORT_DGRAM},  /* 0x02 */
		{NP_CMD_PROXY, NP_AF_INET, NP_TRANSPORT_UNSPEC},   /* 0x10 */
		{NP_CMD_PROXY, NP_AF_INET6, NP_TRANSPORT_UNSPEC},  /* 0x20 */
		{NP_CMD_PROXY, NP_AF_UNIX, NP_TRANSPORT_UNSPEC},   /* 0x30 */
		{NP_CMD_PROXY, 4, NP_TRANSPORT_STREAM},
		{NP_CMD_PROXY, 15, NP_TRANSPORT_STREAM},
		{NP_CMD_PROXY, NP_AF_INET, 3},
		{NP_CMD_PROXY, 0x11, 0x11}, /* nibbles that would spill into each other */
		{2, NP_AF_UNSPEC, NP_TRANSPORT_UNSPEC},
		{5, NP_AF_INET, NP_TRANSPORT_STREAM},
		{0xFF, NP_AF_INET, NP_TRANSPORT_STREAM},
	};
	struct np_header h;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		hdr_init(&h, bad[i].cmd, bad[i].fam, bad[i].tr);
		is_int(np_build_v2(out, sizeof(out), &h, NULL, 0, 0), NP_EINVAL,
		       "np_build_v2 command %u family %u transport %u: NP_EINVAL", bad[i].cmd, bad[i].fam, bad[i].tr);
	}

	/* The payload (block + TLVs) must fit the 16-bit len: 65535 is fine, 65536 is not. */
	static const struct {
		const char *name;
		uint8_t cmd;
		unsigned flags;
		uint16_t value_len;
		int ok;
	} sizes[] = {
		{"LOCAL, one TLV of 65532: payload 65535", NP_CMD_LOCAL, 0, 65532, 1},
		{"LOCAL, one TLV of 65533: payload 65536", NP_CMD_LOCAL, 0, 65533, 0},
		{"LOCAL + CRC32C, one TLV of 65525: payload 65535", NP_CMD_LOCAL, NP_BUILD_CRC32C, 65525, 1},
		{"LOCAL + CRC32C, one TLV of 65526: payload 65536", NP_CMD_LOCAL, NP_BUILD_CRC32C, 65526, 0},
		{"PROXY INET, one TLV of 65520: payload 65535", NP_CMD_PROXY, 0, 65520, 1},
		{"PROXY INET, one TLV of 65535: payload 65550", NP_CMD_PROXY, 0, 65535, 0},
	};
	for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
		struct np_tlv t = {0xE1, sizes[i].value_len, big};
		struct np_header p;

		hdr_init(&h, sizes[i].cmd, NP_AF_INET, NP_TRANSPORT_STREAM);
		int r = np_build_v2(out, sizeof(out), &h, &t, 1, sizes[i].flags);
		if (sizes[i].ok)
			ok(r == NP_V2_MAX_LEN && np_parse(out, (size_t)r, &p) == r, "np_build_v2 %s: built, parses",
			   sizes[i].name);
		else
			is_int(r, NP_EINVAL, "np_build_v2 %s: NP_EINVAL", sizes[i].name);
	}
	/* Many TLVs whose sizes only overflow together. */
	struct np_tlv many[3] = {{0xE1, 30000, big}, {0xE2, 30000, big}, {0xE3, 30000, big}};
	hdr_init(&h, NP_CMD_LOCAL, 0, 0);
	is_int(np_build_v2(out, sizeof(out), &h, many, 3, 0), NP_EINVAL, "np_build_v2 three TLVs of 30000: NP_EINVAL");
	/* NP_EINVAL wins over NP_ENOSPC: a small buffer does not hide an impossible header. */
	hdr_init(&h, 5, 0, 0);
	is_int(np_build_v2(out, 0, &h, NULL, 0, 0), NP_EINVAL, "np_build_v2 command 5 with cap 0: NP_EINVAL");
}

/* ------------------------------------------------------------------------ */
/* round trips                                                              */
/* ------------------------------------------------------------------------ */

#define MAX_TLVS 8
static uint8_t values[MAX_TLVS][400];

/* A random but valid TLV: validated types get values the receiver accepts. */
static void random_tlv(struct np_tlv *t, uint8_t *v)
{
	static const uint8_t types[] = {NP_TLV_ALPN,  NP_TLV_AUTHORITY, NP_TLV_NOOP, NP_TLV_UNIQUE_ID,
					NP_TLV_SSL,   NP_TLV_NETNS,	NP_TLV_GCP,  NP_TLV_AWS,
					NP_TLV_AZURE, 0x00,		0x06,	     0x7F,
					0xF0,	      0xFF};
	uint8_t type = types[rnd_below(ARRAY_LEN(types))];
	size_t len = rnd_below(4) == 0 ? 0 : rnd_below(300);

	for (size_t k = 0; k < len; k++)
		v[k] = rnd_below(4) == 0 ? 0 : (uint8_t)rnd(); /* plenty of NUL bytes */
	if (type == NP_TLV_UNIQUE_ID && len > NP_UNIQUE_ID_MAX)
		len = NP_UNIQUE_ID_MAX;
	if (type == NP_TLV_SSL) {
		/* 5 fixed bytes, then sub-TLVs that tile the rest. */
		size_t w = 5, nsub = rnd_below(4);
		for (size_t s = 0; s < nsub; s++) {
			size_t sl = rnd_below(40);
			v[w] = (uint8_t)(0x21 + rnd_below(8));
			v[w + 1] = 0;
			v[w + 2] = (uint8_t)sl;
			w += 3 + sl; /* the value keeps its random bytes */
		}
		len = w;
	}
	t->type = type;
	t->len = (uint16_t)len;
	t->value = v;
}

static void random_endpoints(struct np_header *h)
{
	for (int k = 0; k < NP_UNIX_PATH_LEN; k++) {
		h->src.path[k] = (uint8_t)rnd();
		h->dst.path[k] = (uint8_t)rnd();
	}
	if (h->family == NP_AF_INET6) {
		/* Zero groups are what RFC 5952 compression is about: make them common. */
		for (int g = 0; g < 8; g++) {
			if (rnd_below(2)) {
				h->src.ip6[2 * g] = h->src.ip6[2 * g + 1] = 0;
			}
			if (rnd_below(2)) {
				h->dst.ip6[2 * g] = h->dst.ip6[2 * g + 1] = 0;
			}
		}
	}
	if (h->family == NP_AF_UNIX && rnd_below(2)) {
		/* A NUL-padded path of random length, as sockaddr_un holds it. */
		size_t l = rnd_below(NP_UNIX_PATH_LEN + 1);
		memset(h->src.path + l, 0, NP_UNIX_PATH_LEN - l);
	}
	h->src.port = (uint16_t)rnd();
	h->dst.port = (uint16_t)rnd();
}

static int same_endpoints(const struct np_header *a, const struct np_header *b)
{
	switch (a->family) {
	case NP_AF_INET:
		return memcmp(a->src.ip4, b->src.ip4, 4) == 0 && memcmp(a->dst.ip4, b->dst.ip4, 4) == 0 &&
		       a->src.port == b->src.port && a->dst.port == b->dst.port;
	case NP_AF_INET6:
		return memcmp(a->src.ip6, b->src.ip6, 16) == 0 && memcmp(a->dst.ip6, b->dst.ip6, 16) == 0 &&
		       a->src.port == b->src.port && a->dst.port == b->dst.port;
	case NP_AF_UNIX:
		return memcmp(a->src.path, b->src.path, 108) == 0 && memcmp(a->dst.path, b->dst.path, 108) == 0 &&
		       b->src.port == 0 && b->dst.port == 0;
	}
	return 1;
}

/* The parsed TLV area against what was asked for, CRC32C included. */
static int same_tlvs(const struct np_header *p, const struct np_tlv *tlvs, size_t n, int crc_added)
{
	struct np_tlv_iter it;
	struct np_tlv t;
	size_t i = 0;
	int r;

	np_tlv_iter_init(&it, p->tlv, p->tlv_len);
	if (crc_added) {
		if (np_tlv_next(&it, &t) != 1 || t.type != NP_TLV_CRC32C || t.len != 4)
			return 0;
	}
	while ((r = np_tlv_next(&it, &t)) == 1) {
		if (i == n || t.type != tlvs[i].type || t.len != tlvs[i].len)
			return 0;
		/* A CRC32C value is the sum, not the bytes given. */
		if (t.type != NP_TLV_CRC32C && t.len && memcmp(t.value, tlvs[i].value, t.len) != 0)
			return 0;
		i++;
	}
	return r == 0 && i == n;
}

static void test_round_trip_v2(void)
{
	static const uint8_t fams[][2] = {
		{NP_AF_UNSPEC, NP_TRANSPORT_UNSPEC},
		{NP_AF_INET, NP_TRANSPORT_STREAM},  {NP_AF_INET, NP_TRANSPORT_DGRAM},
		{NP_AF_INET6, NP_TRANSPORT_STREAM}, {NP_AF_INET6, NP_TRANSPORT_DGRAM},
		{NP_AF_UNIX, NP_TRANSPORT_STREAM},  {NP_AF_UNIX, NP_TRANSPORT_DGRAM},
	};
	int fail_build = 0, fail_parse = 0, fail_fields = 0, fail_tlvs = 0, fail_rebuild = 0, fail_crc = 0;
	int fail_prefix = 0;
	const int rounds = 3000;

	for (int round = 0; round < rounds; round++) {
		struct np_header h, p;
		struct np_tlv tlvs[MAX_TLVS], got[MAX_TLVS + 1];
		size_t n = rnd_below(MAX_TLVS + 1);
		unsigned flags = rnd_below(2) ? NP_BUILD_CRC32C : 0;
		int has_crc = 0;

		hdr_init(&h, rnd_below(5) ? NP_CMD_PROXY : NP_CMD_LOCAL, 0, 0);
		const uint8_t *f = fams[rnd_below(ARRAY_LEN(fams))];
		h.family = f[0];
		h.transport = f[1];
		random_endpoints(&h);
		for (size_t i = 0; i < n; i++)
			random_tlv(&tlvs[i], values[i]);
		if (flags && n > 0 && rnd_below(3) == 0) {
			/* Sometimes the caller places the CRC32C TLV itself. */
			size_t at = rnd_below((unsigned)n);
			tlvs[at].type = NP_TLV_CRC32C;
			tlvs[at].len = 4;
			has_crc = 1;
		}

		int r = np_build_v2(out, sizeof(out), &h, tlvs, n, flags);
		if (r <= 0) {
			if (fail_build++ < 3)
				diag("round %d: np_build_v2 %s", round, np_errname(r));
			continue;
		}
		int pr = np_parse(out, (size_t)r, &p);
		if (pr != r) {
			if (fail_parse++ < 3)
				diag("round %d: np_parse %s of %d bytes", round, np_errname(pr), r);
			continue;
		}
		/* No prefix of a valid header is an error (eager checks stay on the safe side). */
		if (round < 500) {
			for (int k = 1; k < r; k++) {
				if (np_parse(out, (size_t)k, &p) != NP_EAGAIN) {
					if (fail_prefix++ < 3)
						diag("round %d: prefix of %d bytes: %s", round, k,
						     np_errname(np_parse(out, (size_t)k, &p)));
					break;
				}
			}
		}
		/* LOCAL goes out as UNSPEC (2.2), so that is what comes back. */
		int local = h.command == NP_CMD_LOCAL;
		if (p.version != 2 || p.command != h.command || p.v1_proto != NP_V1_NONE ||
		    p.family != (local ? NP_AF_UNSPEC : h.family) ||
		    p.transport != (local ? NP_TRANSPORT_UNSPEC : h.transport) ||
		    (!local && !same_endpoints(&h, &p))) {
			if (fail_fields++ < 3)
				diag("round %d: fields differ (cmd %u fam %u tr %u)", round, h.command, h.family,
				     h.transport);
		}
		if (!same_tlvs(&p, tlvs, n, flags && !has_crc)) {
			if (fail_tlvs++ < 3)
				diag("round %d: TLVs differ", round);
		}
		if (flags) {
			/* The sum sits in the first CRC32C TLV; check it independently. */
			struct np_tlv c;
			if (np_tlv_find(&p, NP_TLV_CRC32C, &c) != 1 ||
			    load32(c.value) != expected_crc(out, (size_t)r, (size_t)(c.value - out))) {
				if (fail_crc++ < 3)
					diag("round %d: CRC32C", round);
			}
		}

		/* build(parse(x)) == x: the parsed TLVs given back, with and without the flag. */
		struct np_tlv_iter it;
		size_t k = 0;
		np_tlv_iter_init(&it, p.tlv, p.tlv_len);
		while (k < ARRAY_LEN(got) && np_tlv_next(&it, &got[k]) == 1)
			k++;
		int r2 = np_build_v2(again, sizeof(again), &p, got, k, round & 1 ? flags : 0);
		if (r2 != r || memcmp(again, out, (size_t)r) != 0) {
			if (fail_rebuild++ < 3)
				diag("round %d: rebuilt header differs (%d vs %d bytes)", round, r2, r);
		}
	}
	ok(fail_build == 0, "%d random v2 headers: all built", rounds);
	ok(fail_parse == 0, "%d random v2 headers: all parse back to their length", rounds);
	ok(fail_prefix == 0, "500 random v2 headers: every prefix is NP_EAGAIN");
	ok(fail_fields == 0, "%d random v2 headers: command, family, transport, addresses, ports", rounds);
	ok(fail_tlvs == 0, "%d random v2 headers: TLV lists, in order, byte for byte", rounds);
	ok(fail_crc == 0, "%d random v2 headers: CRC32C values match an independent sum", rounds);
	ok(fail_rebuild == 0, "%d random v2 headers: build(parse(x)) == x", rounds);
}

/*
 * inet_ntop() as an oracle for the v1 text, except where it writes a
 * dotted-quad tail (first five groups zero), which RFC 5952 hex forms avoid.
 */
static int ntop_comparable(const uint8_t ip[16])
{
	for (int k = 0; k < 10; k++)
		if (ip[k])
			return 1;
	return 0;
}

static void test_round_trip_v1(void)
{
	int fail_build = 0, fail_parse = 0, fail_fields = 0, fail_text = 0, fail_rebuild = 0, fail_unknown = 0;
	int fail_prefix = 0;
	const int rounds = 3000;

	for (int round = 0; round < rounds; round++) {
		struct np_header h, p;
		int tcp6 = (int)rnd_below(2);

		hdr_init(&h, NP_CMD_PROXY, tcp6 ? NP_AF_INET6 : NP_AF_INET, NP_TRANSPORT_STREAM);
		h.version = 1;
		random_endpoints(&h);
		if (!tcp6 && rnd_below(4) == 0)
			h.src.ip4[rnd_below(4)] = 0; /* "0" octets, the one zero that is a digit */

		int r = np_build_v1(out, sizeof(out), &h);
		if (r <= 0 || r > NP_V1_MAX_LEN) {
			if (fail_build++ < 3)
				diag("round %d: np_build_v1 %s", round, np_errname(r));
			continue;
		}
		if (np_parse(out, (size_t)r, &p) != r) {
			if (fail_parse++ < 3)
				diag("round %d: \"%.*s\" does not parse", round, r - 2, (const char *)out);
			continue;
		}
		if (p.version != 1 || p.command != NP_CMD_PROXY || p.family != h.family ||
		    p.transport != NP_TRANSPORT_STREAM || p.v1_proto != (tcp6 ? NP_V1_TCP6 : NP_V1_TCP4) ||
		    !same_endpoints(&h, &p)) {
			if (fail_fields++ < 3)
				diag("round %d: \"%.*s\" fields differ", round, r - 2, (const char *)out);
		}

		/* The text itself, against the C library. */
		char s[64], d[64], line[200];
		int af = tcp6 ? AF_INET6 : AF_INET;
		if (!tcp6 || (ntop_comparable(h.src.ip6) && ntop_comparable(h.dst.ip6))) {
			inet_ntop(af, h.src.ip6, s, sizeof(s));
			inet_ntop(af, h.dst.ip6, d, sizeof(d));
			int n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n", tcp6 ? "TCP6" : "TCP4", s, d,
					 h.src.port, h.dst.port);
			if (n != r || memcmp(line, out, (size_t)r) != 0) {
				if (fail_text++ < 3)
					diag("round %d: \"%.*s\" vs inet_ntop \"%.*s\"", round, r - 2,
					     (const char *)out, n - 2, line);
			}
		}

		for (int k = 1; k < r; k++) {
			if (np_parse(out, (size_t)k, &p) != NP_EAGAIN) {
				if (fail_prefix++ < 3)
					diag("round %d: prefix of %d bytes of \"%.*s\"", round, k, r - 2,
					     (const char *)out);
				break;
			}
		}
		np_parse(out, (size_t)r, &p);
		int r2 = np_build_v1(again, sizeof(again), &p);
		if (r2 != r || memcmp(again, out, (size_t)r) != 0)
			fail_rebuild++;

		/* The same endpoints with anything but PROXY over TCP: UNKNOWN, parsed as such. */
		h.transport = rnd_below(2) ? NP_TRANSPORT_DGRAM : NP_TRANSPORT_UNSPEC;
		r = np_build_v1(out, sizeof(out), &h);
		if (r != 15 || np_parse(out, 15, &p) != 15 || p.v1_proto != NP_V1_UNKNOWN ||
		    p.command != NP_CMD_LOCAL || np_has_addresses(&p))
			fail_unknown++;
	}
	ok(fail_build == 0, "%d random v1 headers: all built within 107 bytes", rounds);
	ok(fail_parse == 0, "%d random v1 headers: all parse back", rounds);
	ok(fail_prefix == 0, "%d random v1 headers: every prefix is NP_EAGAIN", rounds);
	ok(fail_fields == 0, "%d random v1 headers: fields survive", rounds);
	ok(fail_text == 0, "%d random v1 headers: text equals inet_ntop's where comparable", rounds);
	ok(fail_rebuild == 0, "%d random v1 headers: build(parse(x)) == x", rounds);
	ok(fail_unknown == 0, "%d random non-TCP headers: PROXY UNKNOWN", rounds);
}

/* Hand-made v2 headers, rebuilt from their parse: byte for byte the same. */
static void test_rebuild_by_hand(void)
{
	static const struct {
		const char *name;
		size_t len;
		const char *bytes; /* after the signature */
		unsigned flags;
	} cases[] = {
		{"TCP4, no TLV", 16, "\x21\x11\x00\x0C\xC0\xA8\x00\x01\xC0\xA8\x00\x0B\xDC\x04\x01\xBB", 0},
		{"UDP4 with ALPN", 21,
		 "\x21\x12\x00\x11\x0A\x00\x00\x01\x0A\x00\x00\x02\x00\x35\x00\x35\x01\x00\x02h2", 0},
		{"TCP6 with AUTHORITY and NOOP", 4 + 36 + 14 + 3,
		 "\x21\x21\x00\x35"
		 "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
		 "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02"
		 "\x04\xD2\x00\x50"
		 "\x02\x00\x0B"
		 "example.com"
		 "\x04\x00\x00",
		 0},
		{"LOCAL, len 0", 4, "\x20\x00\x00\x00", 0},
		{"LOCAL with a NOOP", 9, "\x20\x00\x00\x05\x04\x00\x02\x00\x00", 0},
		{"PROXY UNSPEC with a custom TLV", 12, "\x21\x00\x00\x08\xE0\x00\x05\x00\x01\x02\x03\x04", 0},
		{"TCP4, SSL TLV with sub-TLVs", 4 + 12 + 3 + 5 + 10 + 7,
		 "\x21\x11\x00\x25\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02"
		 "\x20\x00\x16\x07\x00\x00\x00\x00"
		 "\x21\x00\x07TLSv1.3"
		 "\x22\x00\x04user",
		 0},
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct np_header p;
		struct np_tlv got[8];
		struct np_tlv_iter it;
		size_t n = 12 + cases[i].len, k = 0;

		memcpy(want, sig, 12);
		memcpy(want + 12, cases[i].bytes, cases[i].len);
		int r = np_parse(want, n, &p);
		is_int(r, n, "by hand %s: parses", cases[i].name);
		if (r <= 0)
			continue;
		np_tlv_iter_init(&it, p.tlv, p.tlv_len);
		while (k < ARRAY_LEN(got) && np_tlv_next(&it, &got[k]) == 1)
			k++;
		r = np_build_v2(out, sizeof(out), &p, got, k, cases[i].flags);
		ok(r == (int)n && memcmp(out, want, n) == 0, "by hand %s: build(parse(x)) == x", cases[i].name);
	}

	/* With a CRC32C TLV first and last: rebuilt with the flag, the sum comes out the same. */
	for (int last = 0; last <= 1; last++) {
		struct np_header p;
		struct np_tlv got[4];
		struct np_tlv_iter it;
		size_t w = 16 + 12, k = 0, crc_at;

		fixed(want, 0x21, 0x11, 12 + 7 + 5);
		memcpy(want + 16, "\x7F\x00\x00\x01\x7F\x00\x00\x01\x30\x39\x00\x50", 12);
		if (!last) {
			crc_at = w + 3;
			w += put_tlv(want + w, NP_TLV_CRC32C, "\0\0\0\0", 4);
		}
		w += put_tlv(want + w, NP_TLV_ALPN, "h2", 2);
		if (last) {
			crc_at = w + 3;
			w += put_tlv(want + w, NP_TLV_CRC32C, "\0\0\0\0", 4);
		}
		uint32_t c = ref_crc32c(want, w);
		want[crc_at] = (uint8_t)(c >> 24);
		want[crc_at + 1] = (uint8_t)(c >> 16);
		want[crc_at + 2] = (uint8_t)(c >> 8);
		want[crc_at + 3] = (uint8_t)c;
		int r = np_parse(want, w, &p);
		np_tlv_iter_init(&it, p.tlv, r > 0 ? p.tlv_len : 0);
		while (k < ARRAY_LEN(got) && np_tlv_next(&it, &got[k]) == 1)
			k++;
		r = np_build_v2(out, sizeof(out), &p, got, k, NP_BUILD_CRC32C);
		ok(r == (int)w && memcmp(out, want, w) == 0, "by hand, CRC32C %s: build(parse(x)) == x",
		   last ? "last" : "first");
	}

	/* LOCAL with an address block is the one header the builder will not reproduce. */
	memcpy(want, sig, 12);
	memcpy(want + 12, "\x20\x11\x00\x0C\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02", 16);
	struct np_header p;
	int r = np_parse(want, 28, &p);
	ok(r == 28 && p.family == NP_AF_INET && p.tlv_len == 0, "LOCAL fam 0x11 with a block parses, block skipped");
	r = np_build_v2(out, sizeof(out), &p, NULL, 0, 0);
	ok(r == 16 && out[13] == 0x00, "and is rebuilt as LOCAL UNSPEC without the block (2.2: LOCAL sends none)");
}

/* ------------------------------------------------------------------------ */
/* addresses                                                                */
/* ------------------------------------------------------------------------ */

static void test_format_addr(void)
{
	static const struct {
		uint8_t family;
		const char *in; /* inet_pton() input, or the path */
		const char *text;
	} cases[] = {
		{NP_AF_INET, "0.0.0.0", "0.0.0.0"},
		{NP_AF_INET, "192.0.2.1", "192.0.2.1"},
		{NP_AF_INET, "255.255.255.255", "255.255.255.255"},
		{NP_AF_INET, "10.100.1.0", "10.100.1.0"},
		{NP_AF_INET6, "0:0:0:0:0:0:0:0", "::"},
		{NP_AF_INET6, "0:0:0:0:0:0:0:1", "::1"},
		{NP_AF_INET6, "1:0:0:0:0:0:0:0", "1::"},
		{NP_AF_INET6, "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"},
		{NP_AF_INET6, "2001:DB8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"},     /* a lone 0 stays (4.2.2) */
		{NP_AF_INET6, "2001:0:0:1:0:0:0:1", "2001:0:0:1::1"},               /* longest run (4.2.3) */
		{NP_AF_INET6, "2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},         /* first of equal runs */
		{NP_AF_INET6, "0:0:0:0:0:ffff:192.0.2.1", "::ffff:c000:201"},       /* hex, no dotted tail */
		{NP_AF_INET6, "0:1:0:1:0:1:0:1", "0:1:0:1:0:1:0:1"},               /* no run longer than 1 */
		{NP_AF_INET6, "1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7:0"},
		{NP_AF_INET6, "1:2:3:4:5:6:0:0", "1:2:3:4:5:6::"},
		{NP_AF_INET6, "0:0:1:2:3:4:5:6", "::1:2:3:4:5:6"},
		{NP_AF_INET6, "FE80:0:0:0:ABCD:EF01:0:0", "fe80::abcd:ef01:0:0"},   /* lower case */
		{NP_AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{NP_AF_UNIX, "/var/run/app.sock", "/var/run/app.sock"},
		{NP_AF_UNIX, "", ""},
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct np_endpoint ep;
		char text[200];
		size_t n = strlen(cases[i].text);

		memset(&ep, 0, sizeof(ep));
		if (cases[i].family == NP_AF_UNIX)
			memcpy(ep.path, cases[i].in, strlen(cases[i].in));
		else if (inet_pton(cases[i].family == NP_AF_INET ? AF_INET : AF_INET6, cases[i].in, ep.ip6) != 1)
			diag("bad address in the test table: %s", cases[i].in);

		memset(text, 'X', sizeof(text));
		int r = np_format_addr(text, sizeof(text), cases[i].family, &ep);
		ok(r == (int)n && strcmp(text, cases[i].text) == 0, "np_format_addr %s -> \"%s\"", cases[i].in,
		   cases[i].text);
		if (r != (int)n || strcmp(text, cases[i].text) != 0)
			diag("  got %d \"%.*s\"", r, r > 0 ? r : 0, text);
		/* Room for the NUL is needed: cap n is too small, n + 1 is enough. */
		memset(text, 'X', sizeof(text));
		is_int(np_format_addr(text, n, cases[i].family, &ep), NP_ENOSPC,
		       "np_format_addr %s, cap %zu: NP_ENOSPC", cases[i].in, n);
		ok(text[n] == 'X' && text[n + 1] == 'X', "np_format_addr %s, cap %zu: nothing past cap",
		   cases[i].in, n);
		is_int(np_format_addr(text, n + 1, cases[i].family, &ep), n, "np_format_addr %s, cap %zu: fits",
		       cases[i].in, n + 1);
	}

	/* A 108-byte path with no NUL: all of it, and a terminator the caller has room for. */
	struct np_endpoint ep;
	char text[NP_UNIX_PATH_LEN + 8];
	memset(ep.path, 'p', NP_UNIX_PATH_LEN);
	memset(text, 'X', sizeof(text));
	int r = np_format_addr(text, sizeof(text), NP_AF_UNIX, &ep);
	ok(r == NP_UNIX_PATH_LEN && text[108] == '\0' && text[107] == 'p', "np_format_addr unterminated 108-byte path");
	is_int(np_format_addr(text, 108, NP_AF_UNIX, &ep), NP_ENOSPC,
	       "np_format_addr 108-byte path, cap 108: NP_ENOSPC");
	is_int(np_format_addr(text, 0, NP_AF_INET, &ep), NP_ENOSPC, "np_format_addr cap 0: NP_ENOSPC");
	is_int(np_format_addr(text, sizeof(text), NP_AF_UNSPEC, &ep), NP_EINVAL, "np_format_addr UNSPEC: NP_EINVAL");
	is_int(np_format_addr(text, sizeof(text), 7, &ep), NP_EINVAL, "np_format_addr family 7: NP_EINVAL");

	/* NP_ADDRSTRLEN holds the longest text of both IP families. */
	memset(ep.ip6, 0xFF, 16);
	r = np_format_addr(text, NP_ADDRSTRLEN, NP_AF_INET6, &ep);
	ok(r == 39, "np_format_addr: the longest IPv6 text fits NP_ADDRSTRLEN");
}

static void test_sockaddr(void)
{
	struct np_header h;
	struct sockaddr_storage ss;
	int r;

	/* AF_INET */
	struct sockaddr_in s4, d4;
	memset(&s4, 0, sizeof(s4));
	memset(&d4, 0, sizeof(d4));
	s4.sin_family = d4.sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.1", &s4.sin_addr);
	inet_pton(AF_INET, "198.51.100.2", &d4.sin_addr);
	s4.sin_port = htons(5000);
	d4.sin_port = htons(80);
	memset(&h, 0xA5, sizeof(h));
	r = np_header_from_sockaddr(&h, (struct sockaddr *)&s4, (struct sockaddr *)&d4);
	static const uint8_t ip_s[4] = {192, 0, 2, 1}, ip_d[4] = {198, 51, 100, 2};
	ok(r == 0 && h.version == 2 && h.command == NP_CMD_PROXY && h.family == NP_AF_INET &&
		   h.transport == NP_TRANSPORT_STREAM && h.v1_proto == NP_V1_NONE && memcmp(h.src.ip4, ip_s, 4) == 0 &&
		   memcmp(h.dst.ip4, ip_d, 4) == 0 && h.src.port == 5000 && h.dst.port == 80 && h.tlv == NULL &&
		   h.tlv_len == 0,
	   "np_header_from_sockaddr AF_INET: fields, ports in host order");
	r = np_endpoint_to_sockaddr(&h, &h.src, &ss);
	ok(r == (int)sizeof(struct sockaddr_in) && memcmp(&ss, &s4, sizeof(s4)) == 0,
	   "np_endpoint_to_sockaddr AF_INET source: the same sockaddr_in");
	r = np_endpoint_to_sockaddr(&h, &h.dst, &ss);
	ok(r == (int)sizeof(struct sockaddr_in) && memcmp(&ss, &d4, sizeof(d4)) == 0,
	   "np_endpoint_to_sockaddr AF_INET destination: the same sockaddr_in");
	r = np_build_v1(out, sizeof(out), &h);
	ok(r > 0 && memcmp(out, "PROXY TCP4 192.0.2.1 198.51.100.2 5000 80\r\n", (size_t)r) == 0,
	   "np_header_from_sockaddr AF_INET feeds np_build_v1");

	/* AF_INET6 */
	struct sockaddr_in6 s6, d6;
	memset(&s6, 0, sizeof(s6));
	memset(&d6, 0, sizeof(d6));
	s6.sin6_family = d6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
	inet_pton(AF_INET6, "::ffff:192.0.2.7", &d6.sin6_addr);
	s6.sin6_port = htons(65535);
	d6.sin6_port = htons(0);
	r = np_header_from_sockaddr(&h, (struct sockaddr *)&s6, (struct sockaddr *)&d6);
	ok(r == 0 && h.family == NP_AF_INET6 && memcmp(h.src.ip6, &s6.sin6_addr, 16) == 0 &&
		   memcmp(h.dst.ip6, &d6.sin6_addr, 16) == 0 && h.src.port == 65535 && h.dst.port == 0,
	   "np_header_from_sockaddr AF_INET6: fields");
	r = np_endpoint_to_sockaddr(&h, &h.src, &ss);
	ok(r == (int)sizeof(struct sockaddr_in6) && memcmp(&ss, &s6, sizeof(s6)) == 0,
	   "np_endpoint_to_sockaddr AF_INET6 source: the same sockaddr_in6");
	r = np_endpoint_to_sockaddr(&h, &h.dst, &ss);
	ok(r == (int)sizeof(struct sockaddr_in6) && memcmp(&ss, &d6, sizeof(d6)) == 0,
	   "np_endpoint_to_sockaddr AF_INET6 destination: the same sockaddr_in6");

	/* AF_UNIX: the whole 108-byte path travels. */
	struct sockaddr_un su, du;
	memset(&su, 0, sizeof(su));
	memset(&du, 0, sizeof(du));
	su.sun_family = du.sun_family = AF_UNIX;
	strcpy(su.sun_path, "/run/client.sock");
	memset(du.sun_path, 'u', sizeof(du.sun_path)); /* unterminated, as the kernel allows */
	r = np_header_from_sockaddr(&h, (struct sockaddr *)&su, (struct sockaddr *)&du);
	ok(r == 0 && h.family == NP_AF_UNIX && memcmp(h.src.path, su.sun_path, 108) == 0 &&
		   memcmp(h.dst.path, du.sun_path, 108) == 0 && h.src.port == 0 && h.dst.port == 0,
	   "np_header_from_sockaddr AF_UNIX: paths, port 0");
	r = np_endpoint_to_sockaddr(&h, &h.src, &ss);
	ok(r == (int)sizeof(struct sockaddr_un) && memcmp(&ss, &su, sizeof(su)) == 0,
	   "np_endpoint_to_sockaddr AF_UNIX source: the same sockaddr_un");
	r = np_endpoint_to_sockaddr(&h, &h.dst, &ss);
	ok(r == (int)sizeof(struct sockaddr_un) && memcmp(&ss, &du, sizeof(du)) == 0,
	   "np_endpoint_to_sockaddr AF_UNIX destination: the same sockaddr_un");
	r = np_build_v2(out, sizeof(out), &h, NULL, 0, 0);
	struct np_header p;
	ok(r == 16 + 216 && np_parse(out, (size_t)r, &p) == r && memcmp(p.dst.path, du.sun_path, 108) == 0,
	   "AF_UNIX header through np_build_v2 and np_parse");

	/* Mixed or unsupported families. */
	memset(&h, 0xA5, sizeof(h));
	is_int(np_header_from_sockaddr(&h, (struct sockaddr *)&s4, (struct sockaddr *)&d6), NP_EINVAL,
	       "np_header_from_sockaddr AF_INET + AF_INET6: NP_EINVAL");
	is_int(np_header_from_sockaddr(&h, (struct sockaddr *)&s6, (struct sockaddr *)&d4), NP_EINVAL,
	       "np_header_from_sockaddr AF_INET6 + AF_INET: NP_EINVAL");
	is_int(np_header_from_sockaddr(&h, (struct sockaddr *)&su, (struct sockaddr *)&d4), NP_EINVAL,
	       "np_header_from_sockaddr AF_UNIX + AF_INET: NP_EINVAL");
	struct sockaddr_storage un;
	memset(&un, 0, sizeof(un));
	un.ss_family = AF_UNSPEC;
	is_int(np_header_from_sockaddr(&h, (struct sockaddr *)&un, (struct sockaddr *)&un), NP_EINVAL,
	       "np_header_from_sockaddr AF_UNSPEC twice: NP_EINVAL");
	un.ss_family = AF_NETLINK;
	is_int(np_header_from_sockaddr(&h, (struct sockaddr *)&un, (struct sockaddr *)&un), NP_EINVAL,
	       "np_header_from_sockaddr AF_NETLINK twice: NP_EINVAL");

	/* No addresses: LOCAL, PROXY UNSPEC, v1 UNKNOWN. */
	hdr_init(&h, NP_CMD_LOCAL, NP_AF_INET, NP_TRANSPORT_STREAM);
	is_int(np_endpoint_to_sockaddr(&h, &h.src, &ss), NP_EINVAL, "np_endpoint_to_sockaddr LOCAL: NP_EINVAL");
	hdr_init(&h, NP_CMD_PROXY, NP_AF_UNSPEC, NP_TRANSPORT_UNSPEC);
	is_int(np_endpoint_to_sockaddr(&h, &h.src, &ss), NP_EINVAL, "np_endpoint_to_sockaddr PROXY UNSPEC: NP_EINVAL");
	r = np_parse("PROXY UNKNOWN\r\n", 15, &p);
	is_int(np_endpoint_to_sockaddr(&p, &p.src, &ss), NP_EINVAL, "np_endpoint_to_sockaddr v1 UNKNOWN: NP_EINVAL");

	/* A real loopback connection's getpeername()/getsockname(), as a sender would use them. */
	int c, a;
	struct sockaddr_storage peer, self;
	socklen_t pl = sizeof(peer), ml = sizeof(self);
	if (loopback_listen() == 0 && loopback_connect(&c, &a, 0) == 0) {
		if (getpeername(a, (struct sockaddr *)&peer, &pl) == 0 &&
		    getsockname(a, (struct sockaddr *)&self, &ml) == 0) {
			r = np_header_from_sockaddr(&h, (struct sockaddr *)&peer, (struct sockaddr *)&self);
			char text[NP_ADDRSTRLEN];
			ok(r == 0 && np_format_addr(text, sizeof(text), NP_AF_INET, &h.src) == 9 &&
				   strcmp(text, "127.0.0.1") == 0 && h.dst.port == ntohs(loopback_addr.sin_port),
			   "np_header_from_sockaddr from a loopback connection");
		} else {
			ok(0, "getpeername/getsockname of a loopback connection");
		}
		close(a);
		close(c);
	} else {
		skip("no loopback TCP connection");
	}
	if (loopback_listener >= 0)
		close(loopback_listener);
}

int main(void)
{
	test_build_v1();
	test_build_v2_families();
	test_build_v2_tlvs();
	test_build_v2_crc();
	test_build_v2_invalid();
	test_round_trip_v2();
	test_round_trip_v1();
	test_rebuild_by_hand();
	test_format_addr();
	test_sockaddr();
	return done_testing();
}
