/*
 * fuzz_roundtrip.c - the builders against the parser, two ways.
 *
 * 1. parse -> build -> parse: a v2 header the parser accepted is rebuilt
 *    from its fields and TLVs with np_build_v2() (NP_BUILD_CRC32C when it had
 *    a CRC32C TLV): a PROXY header comes back byte for byte, a LOCAL one in
 *    the builder's normal form (family UNSPEC, no address block, same TLVs);
 *    either way it parses to the same fields. Every accepted header also goes
 *    through np_build_v1() (TCP4/TCP6 keep their endpoints, everything else
 *    becomes UNKNOWN, i.e. LOCAL) and a v1 line through np_build_v2().
 *
 * 2. The input read as a struct np_header plus a few TLVs and a cap: the
 *    builders return exactly what an independent computation predicts
 *    (NP_EINVAL, NP_ENOSPC or the length), never write past cap (the output
 *    buffer is malloc'd with exactly cap bytes, so ASan sees any overflow),
 *    and what they write parses back to the same fields.
 *
 * Built with libFuzzer (make fuzz) and with fuzz/replay.c (make replay).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "check.h"
#include "netproxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


#define MAX_TLVS 256

/* Values of the large TLVs part 2 asks for, more than the input holds. */
static uint8_t pool[65535];

/* A buffer of exactly cap bytes (ASan flags a write past it), never NULL. */
struct outbuf {
	uint8_t *p;
	uint8_t dummy;
};

static uint8_t *out_alloc(struct outbuf *o, size_t cap)
{
	o->p = cap ? malloc(cap) : NULL;
	if (cap)
		CHECK(o->p != NULL);
	return o->p ? o->p : &o->dummy;
}

static void out_free(struct outbuf *o)
{
	free(o->p);
	o->p = NULL;
}

static size_t addr_len(uint8_t family)
{
	switch (family) {
	case NP_AF_INET:
		return 4;
	case NP_AF_INET6:
		return 16;
	case NP_AF_UNIX:
		return NP_UNIX_PATH_LEN;
	}
	return 0;
}

/* The endpoints of two headers with addresses of the same family. */
static void check_same_endpoints(const struct np_header *a, const struct np_header *b)
{
	size_t n = addr_len(a->family);

	CHECK(a->family == b->family);
	CHECK(memcmp(a->src.path, b->src.path, n) == 0);
	CHECK(memcmp(a->dst.path, b->dst.path, n) == 0);
	if (a->family != NP_AF_UNIX) {
		CHECK(a->src.port == b->src.port);
		CHECK(a->dst.port == b->dst.port);
	}
}

/* Parse buf[0..n), which a builder wrote, from a copy of exactly n bytes. */
static int reparse(const uint8_t *buf, size_t n, struct np_header *hdr, uint8_t **keep)
{
	uint8_t *copy = malloc(n);
	CHECK(copy != NULL);
	memcpy(copy, buf, n);
	*keep = copy; /* hdr->tlv points into it */
	return np_parse(copy, n, hdr);
}

/* Collect the TLVs of area[0..len) into tlvs[]; -1 when more than MAX_TLVS. */
static int collect(const uint8_t *area, size_t len, struct np_tlv *tlvs)
{
	struct np_tlv_iter it;
	struct np_tlv t;
	int n = 0, r;

	np_tlv_iter_init(&it, area, len);
	while ((r = np_tlv_next(&it, &t)) == 1) {
		if (n == MAX_TLVS)
			return -1;
		tlvs[n++] = t;
	}
	CHECK(r == 0);
	return n;
}

/*
 * np_build_v1() of hdr, checked against what the v1 grammar says it must be,
 * then parsed back. cap: the size of the buffer to build into.
 */
static void build_v1_and_check(const struct np_header *hdr, size_t cap)
{
	char line[NP_V1_MAX_LEN + 64];
	int tcp = hdr->command == NP_CMD_PROXY && hdr->transport == NP_TRANSPORT_STREAM &&
		  (hdr->family == NP_AF_INET || hdr->family == NP_AF_INET6);
	int want_len;

	/* What the line must say, written independently of the library. */
	if (!tcp) {
		want_len = snprintf(line, sizeof(line), "PROXY UNKNOWN\r\n");
	} else if (hdr->family == NP_AF_INET) {
		const uint8_t *s = hdr->src.ip4, *d = hdr->dst.ip4;
		want_len = snprintf(line, sizeof(line), "PROXY TCP4 %u.%u.%u.%u %u.%u.%u.%u %u %u\r\n",
				    s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3],
				    (unsigned)hdr->src.port, (unsigned)hdr->dst.port);
	} else {
		char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
		CHECK(inet_ntop(AF_INET6, hdr->src.ip6, s, sizeof(s)) != NULL);
		CHECK(inet_ntop(AF_INET6, hdr->dst.ip6, d, sizeof(d)) != NULL);
		/* inet_ntop() writes dotted-quad tails the library does not: compare those by value. */
		if (strchr(s, '.') || strchr(d, '.'))
			want_len = -1;
		else
			want_len = snprintf(line, sizeof(line), "PROXY TCP6 %s %s %u %u\r\n", s, d,
					    (unsigned)hdr->src.port, (unsigned)hdr->dst.port);
	}

	uint8_t big[NP_V1_MAX_LEN + 64];
	int n = np_build_v1(big, sizeof(big), hdr);
	CHECK(n > 0 && n <= NP_V1_MAX_LEN);
	if (want_len >= 0) {
		CHECK(n == want_len);
		CHECK(memcmp(big, line, (size_t)n) == 0);
	}

	/* The same into exactly cap bytes: all of it or NP_ENOSPC, never more than cap. */
	struct outbuf o;
	uint8_t *buf = out_alloc(&o, cap);
	int r = np_build_v1(buf, cap, hdr);
	if ((size_t)n <= cap) {
		CHECK(r == n);
		CHECK(memcmp(buf, big, (size_t)n) == 0);
	} else {
		CHECK(r == NP_ENOSPC);
	}
	out_free(&o);

	/* Exactly enough room, and one byte less. */
	buf = out_alloc(&o, (size_t)n);
	CHECK(np_build_v1(buf, (size_t)n, hdr) == n);
	out_free(&o);
	buf = out_alloc(&o, (size_t)n - 1);
	CHECK(np_build_v1(buf, (size_t)n - 1, hdr) == NP_ENOSPC);
	out_free(&o);

	struct np_header back;
	uint8_t *keep;
	CHECK(reparse(big, (size_t)n, &back, &keep) == n);
	CHECK(back.version == 1);
	CHECK(back.tlv == NULL && back.tlv_len == 0);
	if (tcp) {
		CHECK(back.command == NP_CMD_PROXY);
		CHECK(back.transport == NP_TRANSPORT_STREAM);
		CHECK(back.v1_proto == (hdr->family == NP_AF_INET ? NP_V1_TCP4 : NP_V1_TCP6));
		check_same_endpoints(hdr, &back);
		/* The builder's text is canonical: building again gives the same bytes. */
		uint8_t again[NP_V1_MAX_LEN];
		CHECK(np_build_v1(again, sizeof(again), &back) == n);
		CHECK(memcmp(again, big, (size_t)n) == 0);
	} else {
		CHECK(back.command == NP_CMD_LOCAL);
		CHECK(back.family == NP_AF_UNSPEC && back.transport == NP_TRANSPORT_UNSPEC);
		CHECK(back.v1_proto == NP_V1_UNKNOWN);
	}
	free(keep);
}

/* The seven family/transport bytes of spec 2.2 (0x00 included); -1 otherwise. */
static int block_for(uint8_t family, uint8_t transport)
{
	if (family == NP_AF_UNSPEC && transport == NP_TRANSPORT_UNSPEC)
		return 0;
	if (transport != NP_TRANSPORT_STREAM && transport != NP_TRANSPORT_DGRAM)
		return -1;
	switch (family) {
	case NP_AF_INET:
		return 12;
	case NP_AF_INET6:
		return 36;
	case NP_AF_UNIX:
		return 2 * NP_UNIX_PATH_LEN;
	}
	return -1;
}


/*
 * np_build_v2() of hdr and tlvs[0..ntlv) into exactly cap bytes, checked
 * against an independent prediction, then parsed back.
 */
static void build_v2_and_check(const struct np_header *hdr, const struct np_tlv *tlvs, size_t ntlv,
			       unsigned flags, size_t cap)
{
	int want;
	int block = 0;
	const struct np_tlv *crc = NULL;

	/* The prediction. */
	if (hdr->command > NP_CMD_PROXY) {
		want = NP_EINVAL;
	} else if (hdr->command == NP_CMD_PROXY && (block = block_for(hdr->family, hdr->transport)) < 0) {
		want = NP_EINVAL;
	} else {
		size_t payload = hdr->command == NP_CMD_PROXY ? (size_t)block : 0;
		int bad_crc = 0;

		if (flags & NP_BUILD_CRC32C) {
			/* The one CRC32C TLV of the list gets the sum; two, or one not of 4 bytes, are refused. */
			for (size_t i = 0; i < ntlv; i++) {
				if (tlvs[i].type != NP_TLV_CRC32C)
					continue;
				if (crc || tlvs[i].len != 4)
					bad_crc = 1;
				crc = &tlvs[i];
			}
			if (!crc)
				payload += 7;
		}
		for (size_t i = 0; i < ntlv; i++)
			payload += 3 + (size_t)tlvs[i].len;
		if (bad_crc || payload > 0xFFFF)
			want = NP_EINVAL;
		else if (NP_V2_MIN_LEN + payload > cap)
			want = NP_ENOSPC;
		else
			want = (int)(NP_V2_MIN_LEN + payload);
	}
	if (hdr->command != NP_CMD_PROXY)
		block = 0;

	struct outbuf o;
	uint8_t *buf = out_alloc(&o, cap);
	int r = np_build_v2(buf, cap, hdr, tlvs, ntlv, flags);
	CHECK(r == want);
	if (r < 0) {
		out_free(&o);
		return;
	}

	size_t n = (size_t)r;
	/* One byte less is NP_ENOSPC, without writing past it. */
	{
		struct outbuf o2;
		uint8_t *b2 = out_alloc(&o2, n - 1);
		CHECK(np_build_v2(b2, n - 1, hdr, tlvs, ntlv, flags) == NP_ENOSPC);
		out_free(&o2);
	}

	/* The fixed part and the address block, byte by byte. */
	uint8_t fam = hdr->command == NP_CMD_PROXY ? (uint8_t)(hdr->family << 4 | hdr->transport) : 0;
	CHECK(memcmp(buf, np__v2_sig, NP_V2_SIG_LEN) == 0);
	CHECK(buf[12] == (0x20 | hdr->command));
	CHECK(buf[13] == fam);
	CHECK(np__load16(buf + 14) == n - NP_V2_MIN_LEN);

	/* The TLV list as it must appear: a CRC32C in front when the builder adds one. */
	const uint8_t *w = buf + NP_V2_MIN_LEN + block;
	const uint8_t *crc_at = NULL;
	if ((flags & NP_BUILD_CRC32C) && !crc) {
		CHECK(w[0] == NP_TLV_CRC32C && np__load16(w + 1) == 4);
		crc_at = w + 3;
		w += 7;
	}
	for (size_t i = 0; i < ntlv; i++) {
		CHECK(w[0] == tlvs[i].type);
		CHECK(np__load16(w + 1) == tlvs[i].len);
		if (&tlvs[i] == crc)
			crc_at = w + 3;
		else if (tlvs[i].len)
			CHECK(memcmp(w + 3, tlvs[i].value, tlvs[i].len) == 0);
		w += 3 + (size_t)tlvs[i].len;
	}
	CHECK(w == buf + n);
	if (crc_at) {
		static const uint8_t zero4[4];
		size_t before = (size_t)(crc_at - buf);
		uint32_t sum = np__crc32c_sw(0, buf, before);
		sum = np__crc32c_sw(sum, zero4, 4);
		sum = np__crc32c_sw(sum, crc_at + 4, n - before - 4);
		CHECK(np__load32(crc_at) == sum);
	}

	/*
	 * Parsed back. The parser validates TLV values the builder copies
	 * blindly: an over-long UNIQUE_ID, a malformed SSL TLV, a CRC32C TLV
	 * the builder did not fill in. Those may (or, but for a CRC32C that
	 * happens to be right, must) fail; anything else must parse.
	 */
	int must_fail = 0, may_fail = 0;
	for (size_t i = 0; i < ntlv; i++) {
		const struct np_tlv *t = &tlvs[i];
		if (t->type == NP_TLV_UNIQUE_ID && t->len > NP_UNIQUE_ID_MAX)
			must_fail = 1;
		if (t->type == NP_TLV_SSL && (t->len < 5 || !tiles(t->value + 5, t->len - 5u)))
			must_fail = 1;
		if (t->type == NP_TLV_CRC32C && t != crc) {
			if (t->len != 4)
				must_fail = 1;
			else
				may_fail = 1;
		}
	}

	struct np_header back;
	uint8_t *keep;
	int pr = reparse(buf, n, &back, &keep);
	if (must_fail || may_fail) {
		CHECK(pr == (int)n || pr == NP_ETLVVALUE || pr == NP_ECRC);
		if (must_fail)
			CHECK(pr != (int)n);
	} else {
		CHECK(pr == (int)n);
	}
	if (pr == (int)n) {
		CHECK(back.version == 2);
		CHECK(back.command == hdr->command);
		CHECK(back.v1_proto == NP_V1_NONE);
		if (hdr->command == NP_CMD_PROXY) {
			CHECK(back.family == hdr->family && back.transport == hdr->transport);
			if (np_has_addresses(&back))
				check_same_endpoints(hdr, &back);
		} else {
			CHECK(back.family == NP_AF_UNSPEC && back.transport == NP_TRANSPORT_UNSPEC);
		}
		size_t tlv_len = n - NP_V2_MIN_LEN - (size_t)block;
		CHECK(back.tlv_len == tlv_len);
		if (tlv_len)
			CHECK(back.tlv == keep + NP_V2_MIN_LEN + block);
		else
			CHECK(back.tlv == NULL);
		/* And the library's own v1 view of it. */
		build_v1_and_check(&back, NP_V1_MAX_LEN);
	}
	free(keep);
	out_free(&o);
}

/* Part 1: a header the parser accepted, rebuilt. */
static void roundtrip_parsed(const uint8_t *data, int r, const struct np_header *hdr)
{
	static struct np_tlv tlvs[MAX_TLVS];
	size_t n = (size_t)r;

	build_v1_and_check(hdr, NP_V1_MAX_LEN + 8);

	if (hdr->version == 1) {
		/* A v1 line as v2: TCP4/TCP6 keep their endpoints, UNKNOWN is LOCAL. */
		build_v2_and_check(hdr, NULL, 0, 0, NP_V2_MIN_LEN + 36);
		if (hdr->v1_proto == NP_V1_UNKNOWN)
			CHECK(hdr->command == NP_CMD_LOCAL && hdr->family == NP_AF_UNSPEC);
		return;
	}

	int ntlv = collect(hdr->tlv, hdr->tlv_len, tlvs);
	if (ntlv < 0)
		return;
	int ncrc = 0;
	for (int i = 0; i < ntlv; i++)
		ncrc += tlvs[i].type == NP_TLV_CRC32C;
	unsigned flags = ncrc ? NP_BUILD_CRC32C : 0;

	static uint8_t big[NP_V2_MAX_LEN];
	int b;
	if (ncrc > 1) {
		/* Two CRC32C TLVs cannot both hold the sum: refused with the flag, copied without it. */
		CHECK(np_build_v2(big, sizeof(big), hdr, tlvs, (size_t)ntlv, flags) == NP_EINVAL);
		flags = 0;
	}
	b = np_build_v2(big, sizeof(big), hdr, tlvs, (size_t)ntlv, flags);
	size_t want = hdr->command == NP_CMD_PROXY ? n : NP_V2_MIN_LEN + hdr->tlv_len;
	CHECK(b == (int)want);

	struct np_header back;
	uint8_t *keep;
	int pr = reparse(big, want, &back, &keep);
	if (hdr->command == NP_CMD_PROXY) {
		/* Nothing is normalised: the same bytes, the checksum included. */
		CHECK(memcmp(big, data, n) == 0);
		CHECK(pr == r);
	} else if (ncrc > 1) {
		/* Copied as they were: sums of the old header, which may no longer hold. */
		CHECK(pr == (int)want || pr == NP_ECRC);
	} else {
		CHECK(pr == (int)want);
	}
	if (pr == (int)want) {
		CHECK(back.version == 2);
		CHECK(back.command == hdr->command);
		CHECK(back.v1_proto == NP_V1_NONE);
		if (hdr->command == NP_CMD_PROXY) {
			CHECK(back.family == hdr->family && back.transport == hdr->transport);
			if (np_has_addresses(hdr))
				check_same_endpoints(hdr, &back);
		} else {
			CHECK(back.family == NP_AF_UNSPEC && back.transport == NP_TRANSPORT_UNSPEC);
		}
		CHECK(back.tlv_len == hdr->tlv_len);
		struct np_tlv_iter ia, ib;
		struct np_tlv ta, tb;
		np_tlv_iter_init(&ia, hdr->tlv, hdr->tlv_len);
		np_tlv_iter_init(&ib, back.tlv, back.tlv_len);
		for (;;) {
			int ra = np_tlv_next(&ia, &ta), rb = np_tlv_next(&ib, &tb);
			CHECK(ra == rb);
			if (ra != 1)
				break;
			CHECK(ta.type == tb.type && ta.len == tb.len);
			if (ta.type != NP_TLV_CRC32C || hdr->command == NP_CMD_PROXY)
				CHECK(memcmp(ta.value, tb.value, ta.len) == 0);
		}
	}
	free(keep);

	/* The same through the checking builder, with a cap from the input. */
	build_v2_and_check(hdr, tlvs, (size_t)ntlv, flags, want + (data[n - 1] & 1));
}

/* Part 2: the input read as a header. */
struct reader {
	const uint8_t *p;
	size_t left;
};

static uint8_t rd_u8(struct reader *rd)
{
	if (!rd->left)
		return 0;
	rd->left--;
	return *rd->p++;
}

static uint16_t rd_u16(struct reader *rd)
{
	uint16_t hi = rd_u8(rd);
	return (uint16_t)(hi << 8 | rd_u8(rd));
}

static void rd_bytes(struct reader *rd, uint8_t *out, size_t n)
{
	size_t k = n < rd->left ? n : rd->left;

	memcpy(out, rd->p, k);
	memset(out + k, 0, n - k);
	rd->p += k;
	rd->left -= k;
}

static void builders_from_input(const uint8_t *data, size_t size)
{
	static struct np_tlv tlvs[32];
	struct reader rd = {data, size};
	struct np_header hdr;

	/* Fields the builders must not read are garbage, not zeros. */
	memset(&hdr, 0xEE, sizeof(hdr));
	uint8_t b0 = rd_u8(&rd), b1 = rd_u8(&rd), b2 = rd_u8(&rd);
	hdr.version = 2;
	hdr.command = (b0 & 0xF0) == 0xF0 ? (uint8_t)(b0 & 0x0F) : (uint8_t)(b0 & 1);
	hdr.family = (uint8_t)((b1 >> 4) % 5);
	hdr.transport = (uint8_t)((b1 & 0x0F) % 4);
	hdr.v1_proto = NP_V1_NONE;
	hdr.tlv = NULL;
	hdr.tlv_len = 0;
	switch (hdr.family) {
	case NP_AF_INET:
	case NP_AF_INET6:
		rd_bytes(&rd, hdr.src.ip6, addr_len(hdr.family));
		rd_bytes(&rd, hdr.dst.ip6, addr_len(hdr.family));
		hdr.src.port = rd_u16(&rd);
		hdr.dst.port = rd_u16(&rd);
		break;
	case NP_AF_UNIX: {
		/* A short path, NUL-padded, or (length >= 108) all 108 bytes. */
		size_t ls = rd_u8(&rd) % (NP_UNIX_PATH_LEN + 8), ld = rd_u8(&rd) % (NP_UNIX_PATH_LEN + 8);
		memset(hdr.src.path, 0, sizeof(hdr.src.path));
		memset(hdr.dst.path, 0, sizeof(hdr.dst.path));
		rd_bytes(&rd, hdr.src.path, ls < NP_UNIX_PATH_LEN ? ls : NP_UNIX_PATH_LEN);
		rd_bytes(&rd, hdr.dst.path, ld < NP_UNIX_PATH_LEN ? ld : NP_UNIX_PATH_LEN);
		hdr.src.port = hdr.dst.port = 0;
		break;
	}
	}

	/* TLVs: type, length (0xFF: a 16-bit length), value from the input or the pool. */
	size_t ntlv = rd_u8(&rd) % 12;
	for (size_t i = 0; i < ntlv; i++) {
		uint8_t lb;
		tlvs[i].type = rd_u8(&rd);
		lb = rd_u8(&rd);
		tlvs[i].len = lb == 0xFF ? rd_u16(&rd) : lb;
		if (rd.left >= tlvs[i].len) {
			tlvs[i].value = rd.p;
			rd.p += tlvs[i].len;
			rd.left -= tlvs[i].len;
		} else {
			tlvs[i].value = pool;
		}
	}

	/* The cap: the exact need (from a first build), one less, a random size or plenty. */
	unsigned flags = b2 & 1 ? NP_BUILD_CRC32C : 0;
	uint16_t cap_in = rd_u16(&rd);
	static uint8_t big[NP_V2_MAX_LEN + 16];
	int need = np_build_v2(big, sizeof(big), &hdr, tlvs, ntlv, flags);
	size_t cap;
	switch (b2 >> 1 & 3) {
	case 0:
		cap = need > 0 ? (size_t)need : cap_in;
		break;
	case 1:
		cap = need > 0 ? (size_t)need - 1 : cap_in;
		break;
	case 2:
		cap = cap_in;
		break;
	default:
		cap = sizeof(big);
		break;
	}
	build_v2_and_check(&hdr, tlvs, ntlv, flags, cap);
	build_v1_and_check(&hdr, b2 & 0x08 ? cap_in % 128 : NP_V1_MAX_LEN);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct np_header hdr;
	int r = np_parse(data, size, &hdr);

	if (r > 0)
		roundtrip_parsed(data, r, &hdr);
	builders_from_input(data, size);
	return 0;
}
