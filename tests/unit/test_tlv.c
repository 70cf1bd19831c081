/*
 * test_tlv.c - the TLV list (spec 2.2): the iterator, np_tlv_find, the SSL
 * TLV and its sub-TLVs (2.2.6), and the vendor TLVs of the custom range
 * (AWS 0xEA, Azure 0xEE, GCP 0xE0; checklist section F).
 *
 * Values are bytes with a length, never C strings: several carry NULs.
 */
#include <stdint.h>
#include <string.h>

#include "netproxy.h"
#include "tap.h"
#include "reference.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static size_t put_tlv(uint8_t *w, uint8_t type, const void *v, size_t len)
{
	w[0] = type;
	w[1] = (uint8_t)(len >> 8);
	w[2] = (uint8_t)len;
	if (len)
		memcpy(w + 3, v, len);
	return 3 + len;
}

/* A LOCAL v2 header whose payload is the TLV area, parsed: TLVs from byte 16. */
static int parse_local(uint8_t *buf, const uint8_t *area, size_t len, struct np_header *h)
{
	memcpy(buf, sig, 12);
	buf[12] = 0x20;
	buf[13] = 0x00;
	buf[14] = (uint8_t)(len >> 8);
	buf[15] = (uint8_t)len;
	memcpy(buf + 16, area, len);
	return np_parse(buf, 16 + len, h);
}

static int tlv_is(const struct np_tlv *t, uint8_t type, const void *value, size_t len)
{
	return t->type == type && t->len == len && (len == 0 || memcmp(t->value, value, len) == 0);
}

/* ------------------------------------------------------------------------ */
/* the iterator                                                             */
/* ------------------------------------------------------------------------ */

static void test_iter_tiling(void)
{
	static uint8_t area[600], big[300];
	static const uint8_t nul_value[] = {0x00, 'a', 0x00, 0x00, 'b', 0x00};
	struct np_tlv_iter it;
	struct np_tlv t;
	size_t w = 0;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	w += put_tlv(area + w, NP_TLV_NOOP, NULL, 0);
	w += put_tlv(area + w, 0xE3, nul_value, sizeof(nul_value));
	w += put_tlv(area + w, NP_TLV_AUTHORITY, big, sizeof(big));
	w += put_tlv(area + w, 0xFF, "z", 1);

	np_tlv_iter_init(&it, area, w);
	ok(np_tlv_next(&it, &t) == 1 && t.type == NP_TLV_NOOP && t.len == 0 && t.value == area + 3,
	   "iter: an empty TLV");
	ok(np_tlv_next(&it, &t) == 1 && tlv_is(&t, 0xE3, nul_value, sizeof(nul_value)) && t.value == area + 6,
	   "iter: a value with NUL bytes keeps its length and bytes, in place");
	ok(np_tlv_next(&it, &t) == 1 && tlv_is(&t, NP_TLV_AUTHORITY, big, sizeof(big)), "iter: a 300-byte value");
	ok(np_tlv_next(&it, &t) == 1 && tlv_is(&t, 0xFF, "z", 1), "iter: the last TLV ends exactly at the end");
	is_int(np_tlv_next(&it, &t), 0, "iter: then the end");
	is_int(np_tlv_next(&it, &t), 0, "iter: and the end again");
	ok(it.left == 0 && it.pos == area + w, "iter: cursor at the end of the area");

	np_tlv_iter_init(&it, NULL, 0);
	is_int(np_tlv_next(&it, &t), 0, "iter: an empty area (NULL, 0) has no TLV");
	np_tlv_iter_init(&it, area, 0);
	is_int(np_tlv_next(&it, &t), 0, "iter: an empty area (pointer, 0) has no TLV");

	/* A TLV's value is skipped whole, even when it looks like TLVs itself. */
	uint8_t nested[32];
	size_t inner = put_tlv(nested + 3, NP_TLV_ALPN, "h2", 2);
	put_tlv(nested, NP_TLV_NOOP, nested + 3, inner);
	np_tlv_iter_init(&it, nested, 3 + inner);
	ok(np_tlv_next(&it, &t) == 1 && t.type == NP_TLV_NOOP && t.len == inner && np_tlv_next(&it, &t) == 0,
	   "iter: a value that looks like a TLV is not entered");
}

static void test_iter_truncated(void)
{
	static const struct {
		const char *name;
		size_t len;
		const char *bytes;
		int valid_before; /* TLVs returned before the error */
	} cases[] = {
		{"type only", 1, "\x01", 0},
		{"type and half a length", 2, "\x01\x00", 0},
		{"length 1, no value", 3, "\x01\x00\x01", 0},
		{"value one byte short", 5, "\x01\x00\x03xy", 0},
		{"length 0xFFFF", 4, "\x01\xFF\xFFx", 0},
		{"length 0x8000", 4, "\x01\x80\x00x", 0},
		{"a good TLV, then a type byte", 6, "\x04\x00\x02" "ab\x05", 1},
		{"two good TLVs, then a short value", 12, "\x04\x00\x00\x04\x00\x01" "a\x01\x00\x03xy", 2},
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct np_tlv_iter it;
		struct np_tlv t;
		int good = 0, r;

		np_tlv_iter_init(&it, cases[i].bytes, cases[i].len);
		while ((r = np_tlv_next(&it, &t)) == 1)
			good++;
		is_int(r, NP_ETLV, "iter %s: NP_ETLV", cases[i].name);
		is_int(good, cases[i].valid_before, "iter %s: %d good TLV(s) first", cases[i].name,
		       cases[i].valid_before);
		/* An error is sticky: the cursor does not move past it. */
		ok(np_tlv_next(&it, &t) == NP_ETLV && np_tlv_next(&it, &t) == NP_ETLV, "iter %s: stays NP_ETLV",
		   cases[i].name);
	}
}

/* ------------------------------------------------------------------------ */
/* np_tlv_find                                                              */
/* ------------------------------------------------------------------------ */

static void test_find(void)
{
	static uint8_t buf[1024], area[512];
	static const uint8_t nul_value[] = {'i', 'd', 0x00, 0x00, 0x01, 0x00};
	struct np_header h;
	struct np_tlv t;
	size_t w = 0;

	w += put_tlv(area + w, NP_TLV_NOOP, "\0\0", 2);
	w += put_tlv(area + w, NP_TLV_ALPN, "h2", 2);
	w += put_tlv(area + w, NP_TLV_AUTHORITY, "example.com", 11);
	w += put_tlv(area + w, NP_TLV_ALPN, "http/1.1", 8); /* duplicates are allowed (E.5) */
	w += put_tlv(area + w, NP_TLV_UNIQUE_ID, nul_value, sizeof(nul_value));
	int r = parse_local(buf, area, w, &h);
	is_int(r, 16 + w, "find: a header with five TLVs parses");

	ok(np_tlv_find(&h, NP_TLV_ALPN, &t) == 1 && tlv_is(&t, NP_TLV_ALPN, "h2", 2),
	   "find: the first of two ALPN TLVs");
	ok(np_tlv_find(&h, NP_TLV_AUTHORITY, &t) == 1 && tlv_is(&t, NP_TLV_AUTHORITY, "example.com", 11) &&
		   t.value == buf + 16 + 5 + 5 + 3,
	   "find: AUTHORITY, pointing into the parsed buffer");
	ok(np_tlv_find(&h, NP_TLV_UNIQUE_ID, &t) == 1 && t.len == 6 && memcmp(t.value, nul_value, 6) == 0,
	   "find: a UNIQUE_ID with NUL bytes, all 6 bytes");
	is_int(np_tlv_find(&h, NP_TLV_SSL, &t), 0, "find: absent type: 0");
	is_int(np_tlv_find(&h, 0x00, &t), 0, "find: type 0 absent: 0 (NUL is no terminator)");

	/* A header without TLVs: v1, and v2 with none. */
	r = np_parse("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 32, &h);
	ok(r == 32 && np_tlv_find(&h, NP_TLV_ALPN, &t) == 0, "find: a v1 header has no TLV");
	r = parse_local(buf, area, 0, &h);
	ok(r == 16 && np_tlv_find(&h, NP_TLV_ALPN, &t) == 0, "find: a v2 header without TLVs");

	/* A malformed area (np_parse never gives one; a caller's struct can). */
	static const uint8_t bad[] = {NP_TLV_ALPN, 0x00, 0x02, 'h', '2', NP_TLV_NOOP, 0x00, 0x09, 'x'};
	memset(&h, 0, sizeof(h));
	h.version = 2;
	h.tlv = bad;
	h.tlv_len = sizeof(bad);
	is_int(np_tlv_find(&h, NP_TLV_AUTHORITY, &t), NP_ETLV, "find: malformed area, type absent: NP_ETLV");
	is_int(np_tlv_find(&h, NP_TLV_NOOP, &t), NP_ETLV, "find: malformed area, type in the bad TLV: NP_ETLV");
	ok(np_tlv_find(&h, NP_TLV_ALPN, &t) == 1 && tlv_is(&t, NP_TLV_ALPN, "h2", 2),
	   "find: malformed area, found before the damage: 1");
}

/* ------------------------------------------------------------------------ */
/* SSL                                                                      */
/* ------------------------------------------------------------------------ */

struct sub {
	uint8_t type;
	size_t len;
	const char *value;
};

/* The sub-TLVs of 2.2.6, one of each, the client certificate binary. */
static const struct sub subs[] = {
	{NP_SSL_VERSION, 7, "TLSv1.3"},
	{NP_SSL_CN, 18, "client.example.com"},
	{NP_SSL_CIPHER, 27, "ECDHE-RSA-AES128-GCM-SHA256"},
	{NP_SSL_SIG_ALG, 10, "RSA-SHA256"},
	{NP_SSL_KEY_ALG, 7, "RSA2048"},
	{NP_SSL_GROUP, 9, "secp256r1"},
	{NP_SSL_SIG_SCHEME, 19, "rsa_pss_rsae_sha256"},
	{NP_SSL_CLIENT_CERT, 10, "\x30\x82\x00\x04\x00\x00\x01\x00\x02\x00"}, /* DER: NULs inside */
};

static size_t ssl_value(uint8_t *v, uint8_t client, const uint8_t verify[4], const struct sub *s, size_t n)
{
	size_t w = 5;

	v[0] = client;
	memcpy(v + 1, verify, 4);
	for (size_t i = 0; i < n; i++)
		w += put_tlv(v + w, s[i].type, s[i].value, s[i].len);
	return w;
}

static void test_ssl_decode(void)
{
	static uint8_t v[512], buf[1024], area[600];
	static const uint8_t verify_be[4] = {0x01, 0x02, 0x03, 0x04};
	struct np_tlv t, sub;
	struct np_ssl ssl;

	size_t n = ssl_value(v, NP_SSL_CLIENT_SSL | NP_SSL_CLIENT_CERT_CONN | NP_SSL_CLIENT_CERT_SESS, verify_be,
			     subs, ARRAY_LEN(subs));
	/* Through a whole header, as a receiver meets it. */
	size_t w = put_tlv(area, NP_TLV_SSL, v, n);
	struct np_header h;
	int r = parse_local(buf, area, w, &h);
	is_int(r, 16 + w, "SSL: a header with an SSL TLV of 8 sub-TLVs parses");
	ok(np_tlv_find(&h, NP_TLV_SSL, &t) == 1 && t.len == n, "SSL: found");
	is_int(np_ssl_decode(&t, &ssl), 0, "SSL: decoded");
	is_int(ssl.client, 0x07, "SSL: client bits");
	ok(ssl.verify == 0x01020304u, "SSL: verify read big-endian (0x01020304)");
	ok(ssl.sub == t.value + 5 && ssl.sub_len == n - 5, "SSL: sub-TLVs after the 5 fixed bytes");
	for (size_t i = 0; i < ARRAY_LEN(subs); i++)
		ok(np_ssl_find(&ssl, subs[i].type, &sub) == 1 && tlv_is(&sub, subs[i].type, subs[i].value, subs[i].len),
		   "SSL: sub-TLV 0x%02x found, %zu bytes", subs[i].type, subs[i].len);
	is_int(np_ssl_find(&ssl, 0x29, &sub), 0, "SSL: sub-TLV 0x29 absent");
	is_int(np_ssl_find(&ssl, NP_TLV_SSL, &sub), 0, "SSL: no 0x20 inside itself");

	/* The sub-TLVs with the generic iterator too, in order. */
	struct np_tlv_iter it;
	size_t k = 0;
	np_tlv_iter_init(&it, ssl.sub, ssl.sub_len);
	while (np_tlv_next(&it, &sub) == 1 && k < ARRAY_LEN(subs) && sub.type == subs[k].type)
		k++;
	is_int(k, ARRAY_LEN(subs), "SSL: the iterator walks the 8 sub-TLVs in order");

	/* verify 1 is 00 00 00 01 on the wire, not 01 00 00 00. */
	static const uint8_t one[4] = {0, 0, 0, 1};
	n = ssl_value(v, NP_SSL_CLIENT_SSL, one, NULL, 0);
	t = (struct np_tlv){NP_TLV_SSL, (uint16_t)n, v};
	ok(np_ssl_decode(&t, &ssl) == 0 && ssl.verify == 1 && ssl.sub_len == 0, "SSL: 5 bytes, verify 1, no sub-TLV");
	is_int(np_ssl_find(&ssl, NP_SSL_VERSION, &sub), 0, "SSL: nothing to find in no sub-TLVs");

	/* First of duplicate sub-TLVs. */
	static const struct sub dup[] = {{NP_SSL_CN, 3, "one"}, {NP_SSL_CN, 3, "two"}};
	n = ssl_value(v, NP_SSL_CLIENT_SSL, one, dup, 2);
	t = (struct np_tlv){NP_TLV_SSL, (uint16_t)n, v};
	ok(np_ssl_decode(&t, &ssl) == 0 && np_ssl_find(&ssl, NP_SSL_CN, &sub) == 1 && tlv_is(&sub, NP_SSL_CN, "one", 3),
	   "SSL: the first of two CN sub-TLVs");

	/* What np_ssl_decode refuses. */
	static const struct {
		const char *name;
		uint8_t type;
		size_t len;
		const char *bytes;
	} bad[] = {
		{"type 0x21 (a sub-TLV type)", NP_SSL_VERSION, 5, "\x01\x00\x00\x00\x00"},
		{"type 0x04", NP_TLV_NOOP, 5, "\x01\x00\x00\x00\x00"},
		{"4 bytes", NP_TLV_SSL, 4, "\x01\x00\x00\x00"},
		{"0 bytes", NP_TLV_SSL, 0, ""},
		{"a sub-TLV longer than the rest", NP_TLV_SSL, 9, "\x01\x00\x00\x00\x00\x21\x00\x05T"},
		{"one stray byte after 5", NP_TLV_SSL, 6, "\x01\x00\x00\x00\x00\x21"},
		{"two stray bytes after a sub-TLV", NP_TLV_SSL, 10, "\x01\x00\x00\x00\x00\x21\x00\x00\x22\x00"},
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		t = (struct np_tlv){bad[i].type, (uint16_t)bad[i].len, (const uint8_t *)bad[i].bytes};
		is_int(np_ssl_decode(&t, &ssl), NP_ETLVVALUE, "np_ssl_decode %s: NP_ETLVVALUE", bad[i].name);
	}
}

/*
 * 2.2.6: verify is 0 when a presented certificate was verified, but HAProxy
 * also leaves it 0 when none was presented (checklist C25): "verified" needs
 * a certificate bit as well.
 */
static void test_ssl_verified(void)
{
	static const struct {
		uint8_t client;
		uint32_t verify;
		int want;
	} cases[] = {
		{0, 0, 0},
		{NP_SSL_CLIENT_SSL, 0, 0}, /* the pitfall: TLS, no certificate, verify 0 */
		{NP_SSL_CLIENT_SSL | NP_SSL_CLIENT_CERT_CONN, 0, 1},
		{NP_SSL_CLIENT_SSL | NP_SSL_CLIENT_CERT_SESS, 0, 1}, /* resumed session */
		{NP_SSL_CLIENT_SSL | NP_SSL_CLIENT_CERT_CONN | NP_SSL_CLIENT_CERT_SESS, 0, 1},
		{NP_SSL_CLIENT_CERT_CONN, 0, 1},
		{NP_SSL_CLIENT_SSL | NP_SSL_CLIENT_CERT_CONN, 1, 0},
		{NP_SSL_CLIENT_SSL | NP_SSL_CLIENT_CERT_SESS, 20, 0},
		{NP_SSL_CLIENT_SSL | NP_SSL_CLIENT_CERT_CONN | NP_SSL_CLIENT_CERT_SESS, 0x80000000u, 0},
		{NP_SSL_CLIENT_SSL, 1, 0},
		{0xF8, 0, 0}, /* unassigned bits only */
		{0xFF, 0, 1},
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		uint8_t v[5] = {cases[i].client, (uint8_t)(cases[i].verify >> 24), (uint8_t)(cases[i].verify >> 16),
				(uint8_t)(cases[i].verify >> 8), (uint8_t)cases[i].verify};
		struct np_tlv t = {NP_TLV_SSL, 5, v};
		struct np_ssl ssl;

		int r = np_ssl_decode(&t, &ssl);
		ok(r == 0 && !!np_ssl_verified(&ssl) == cases[i].want, "np_ssl_verified client 0x%02x verify %u: %s",
		   cases[i].client, cases[i].verify, cases[i].want ? "yes" : "no");
	}
}

/* ------------------------------------------------------------------------ */
/* vendor TLVs                                                              */
/* ------------------------------------------------------------------------ */

static void test_aws(void)
{
	static const char id[] = "vpce-08d2bf15fac5001c9";
	uint8_t v[64];
	const uint8_t *got = NULL;
	size_t len = 0;

	v[0] = 0x01;
	memcpy(v + 1, id, sizeof(id) - 1);
	struct np_tlv t = {NP_TLV_AWS, (uint16_t)sizeof(id), v};
	ok(np_tlv_aws_vpce_id(&t, &got, &len) == 0 && len == 22 && got == v + 1 && memcmp(got, id, 22) == 0,
	   "AWS 0xEA subtype 1: \"vpce-08d2bf15fac5001c9\", 22 bytes, in place");

	/* An id with a NUL inside is still all its bytes: no C-string handling. */
	memcpy(v + 1, "vpce-\0x", 7);
	t.len = 8;
	ok(np_tlv_aws_vpce_id(&t, &got, &len) == 0 && len == 7 && got[5] == 0 && got[6] == 'x',
	   "AWS: an id with a NUL inside keeps its 7 bytes");

	static const struct {
		const char *name;
		uint8_t type;
		size_t len;
		const char *bytes;
	} bad[] = {
		{"subtype 2", NP_TLV_AWS, 6, "\x02vpce-"},
		{"subtype 0", NP_TLV_AWS, 6, "\x00vpce-"},
		{"empty value", NP_TLV_AWS, 0, ""},
		{"subtype only, empty id", NP_TLV_AWS, 1, "\x01"},
		{"type 0xEE", NP_TLV_AZURE, 6, "\x01vpce-"},
		{"type 0xE0", NP_TLV_GCP, 6, "\x01vpce-"},
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		t = (struct np_tlv){bad[i].type, (uint16_t)bad[i].len, (const uint8_t *)bad[i].bytes};
		is_int(np_tlv_aws_vpce_id(&t, &got, &len), NP_ETLVVALUE, "AWS %s: NP_ETLVVALUE", bad[i].name);
	}

	/* As an NLB sends it: CRC32C first, 0xEA, a NOOP pad (checklist F). */
	static uint8_t hdr[256];
	struct np_header h;
	memset(&h, 0, sizeof(h));
	h.version = 2;
	h.command = NP_CMD_PROXY;
	h.family = NP_AF_INET;
	h.transport = NP_TRANSPORT_STREAM;
	v[0] = 0x01;
	memcpy(v + 1, id, sizeof(id) - 1);
	static const uint8_t pad[36];
	const struct np_tlv tlvs[] = {{NP_TLV_AWS, (uint16_t)sizeof(id), v}, {NP_TLV_NOOP, sizeof(pad), pad}};
	int n = np_build_v2(hdr, sizeof(hdr), &h, tlvs, 2, NP_BUILD_CRC32C);
	struct np_header p;
	ok(n > 0 && np_parse(hdr, (size_t)n, &p) == n && np_tlv_find(&p, NP_TLV_AWS, &t) == 1 &&
		   np_tlv_aws_vpce_id(&t, &got, &len) == 0 && len == 22 && memcmp(got, id, 22) == 0,
	   "AWS: the id out of a whole NLB-style header");
}

static void test_azure(void)
{
	uint32_t id = 0;
	struct np_tlv t;

	static const struct {
		const char *bytes;
		uint32_t id;
	} good[] = {
		{"\x01\x78\x56\x34\x12", 0x12345678u},
		{"\x01\x01\x00\x00\x00", 1},
		{"\x01\x00\x00\x00\x80", 0x80000000u},
		{"\x01\xFF\xFF\xFF\xFF", 0xFFFFFFFFu},
	};
	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		t = (struct np_tlv){NP_TLV_AZURE, 5, (const uint8_t *)good[i].bytes};
		id = 0;
		ok(np_tlv_azure_link_id(&t, &id) == 0 && id == good[i].id, "Azure 0xEE: link id 0x%08X, little-endian",
		   good[i].id);
	}

	static const struct {
		const char *name;
		uint8_t type;
		size_t len;
		const char *bytes;
	} bad[] = {
		{"4 bytes", NP_TLV_AZURE, 4, "\x01\x78\x56\x34"},
		{"6 bytes", NP_TLV_AZURE, 6, "\x01\x78\x56\x34\x12\x00"},
		{"empty", NP_TLV_AZURE, 0, ""},
		{"subtype 2", NP_TLV_AZURE, 5, "\x02\x78\x56\x34\x12"},
		{"type 0xEA", NP_TLV_AWS, 5, "\x01\x78\x56\x34\x12"},
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		t = (struct np_tlv){bad[i].type, (uint16_t)bad[i].len, (const uint8_t *)bad[i].bytes};
		is_int(np_tlv_azure_link_id(&t, &id), NP_ETLVVALUE, "Azure %s: NP_ETLVVALUE", bad[i].name);
	}
}

static void test_gcp(void)
{
	uint64_t id = 0;
	struct np_tlv t;

	static const struct {
		const char *bytes;
		uint64_t id;
	} good[] = {
		{"\x01\x02\x03\x04\x05\x06\x07\x08", 0x0102030405060708ull},
		{"\x00\x00\x00\x00\x00\x00\x00\x01", 1},
		{"\x80\x00\x00\x00\x00\x00\x00\x00", 0x8000000000000000ull},
		{"\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 0xFFFFFFFFFFFFFFFFull},
	};
	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		t = (struct np_tlv){NP_TLV_GCP, 8, (const uint8_t *)good[i].bytes};
		id = 0;
		ok(np_tlv_gcp_psc_id(&t, &id) == 0 && id == good[i].id, "GCP 0xE0: id 0x%016llX, big-endian",
		   (unsigned long long)good[i].id);
	}

	static const struct {
		const char *name;
		uint8_t type;
		size_t len;
		const char *bytes;
	} bad[] = {
		{"7 bytes", NP_TLV_GCP, 7, "\x01\x02\x03\x04\x05\x06\x07"},
		{"9 bytes", NP_TLV_GCP, 9, "\x01\x02\x03\x04\x05\x06\x07\x08\x09"},
		{"empty", NP_TLV_GCP, 0, ""},
		{"type 0xE1", 0xE1, 8, "\x01\x02\x03\x04\x05\x06\x07\x08"},
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		t = (struct np_tlv){bad[i].type, (uint16_t)bad[i].len, (const uint8_t *)bad[i].bytes};
		is_int(np_tlv_gcp_psc_id(&t, &id), NP_ETLVVALUE, "GCP %s: NP_ETLVVALUE", bad[i].name);
	}
}

int main(void)
{
	test_iter_tiling();
	test_iter_truncated();
	test_find();
	test_ssl_decode();
	test_ssl_verified();
	test_aws();
	test_azure();
	test_gcp();
	return done_testing();
}
