/*
 * v1.c - the text format (spec 2.1), read and written.
 *
 *   "PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP sport SP dport CRLF
 *   "PROXY" SP "UNKNOWN" [SP anything but CR and LF] CRLF
 *
 * The grammar is strict: single spaces, no leading zeros in octets or ports,
 * addresses of the announced family, CRLF within 107 bytes. The one liberty,
 * taken by every sender that uses inet_ntop(), is a dotted-quad tail in TCP6
 * addresses (::ffff:192.0.2.1).
 */
#include "internal.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

static const char v1_prefix[] = "PROXY ";
#define V1_PREFIX_LEN 6

/*
 * The token parsers below take no end pointer: each stops at the first byte
 * outside its alphabet (digits, hex digits, '.', ':'), and the CR that ends
 * the line is outside all of them, so none can run past it. The line end is
 * found first, and only then are the tokens read (spec 2.1: wait for the CRLF).
 */

static inline unsigned digit(uint8_t c)
{
	return (unsigned)c - '0'; /* > 9 for every non-digit */
}

/* Hex digit values plus one, so that the zeroed rest of the table means "not hex". */
static const uint8_t hex_plus_one[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
	['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15,
	['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

static inline int hexval(uint8_t c)
{
	return hex_plus_one[c] - 1;
}

/* A decimal of at most max_digits digits, no leading zero, at most max. */
static const uint8_t *parse_dec(const uint8_t *p, unsigned max_digits, unsigned max, unsigned *out)
{
	unsigned v = digit(*p);

	if (v > 9)
		return NULL;
	p++;
	if (v == 0) {
		*out = 0;
		return digit(*p) <= 9 ? NULL : p;
	}
	for (unsigned n = 1, d; (d = digit(*p)) <= 9; n++, p++) {
		if (n == max_digits)
			return NULL;
		v = v * 10 + d;
	}
	if (v > max)
		return NULL;
	*out = v;
	return p;
}

/*
 * One dotted-quad octet, 0 to 255 without a leading zero. Unrolled: this is
 * most of a TCP4 line's cost. A digit is only looked past when it is a
 * digit, so the reads stop at the CR like every other token parser's.
 */
static inline __attribute__((always_inline)) const uint8_t *parse_octet(const uint8_t *p, uint8_t *out)
{
	unsigned d0 = digit(p[0]), d1, d2;

	if (d0 > 9)
		return NULL;
	if ((d1 = digit(p[1])) > 9) {
		*out = (uint8_t)d0;
		return p + 1;
	}
	if (d0 == 0)
		return NULL;
	if ((d2 = digit(p[2])) > 9) {
		*out = (uint8_t)(d0 * 10 + d1);
		return p + 2;
	}
	unsigned v = d0 * 100 + d1 * 10 + d2;
	if (v > 255 || digit(p[3]) <= 9)
		return NULL;
	*out = (uint8_t)v;
	return p + 3;
}

static const uint8_t *parse_ip4(const uint8_t *p, uint8_t out[4])
{
	if (!(p = parse_octet(p, &out[0])) || *p++ != '.')
		return NULL;
	if (!(p = parse_octet(p, &out[1])) || *p++ != '.')
		return NULL;
	if (!(p = parse_octet(p, &out[2])) || *p++ != '.')
		return NULL;
	return parse_octet(p, &out[3]);
}

/*
 * Hex groups of 1 to 4 digits separated by ':', at most one "::" standing for
 * one or more zero groups, optionally ending in a dotted quad: exactly 128
 * bits. Zone ids ("%eth0") are not addresses here.
 */
static const uint8_t *parse_ip6(const uint8_t *p, uint8_t out[16])
{
	uint16_t words[8];
	int n = 0, gap = -1;

	if (*p == ':') {
		if (p[1] != ':')
			return NULL;
		gap = 0;
		p += 2;
		if (hexval(*p) < 0)
			goto expand; /* "::" alone */
	}
	for (;;) {
		const uint8_t *group = p;
		unsigned v = 0;
		int digits = 0, d;

		while (digits < 5 && (d = hexval(*p)) >= 0) {
			v = v << 4 | (unsigned)d;
			digits++;
			p++;
		}
		if (digits == 0)
			return NULL;
		if (*p == '.') {
			uint8_t quad[4];

			if (n > 6 || !(p = parse_ip4(group, quad)))
				return NULL;
			words[n++] = (uint16_t)(quad[0] << 8 | quad[1]);
			words[n++] = (uint16_t)(quad[2] << 8 | quad[3]);
			break;
		}
		if (digits > 4 || n == 8)
			return NULL;
		words[n++] = (uint16_t)v;
		if (*p != ':')
			break;
		p++;
		if (*p == ':') {
			if (gap >= 0)
				return NULL;
			gap = n;
			p++;
			if (hexval(*p) < 0)
				break; /* "::" at the end */
		}
	}
expand:
	if (gap < 0 ? n != 8 : n > 7)
		return NULL;
	int zeros = gap < 0 ? 0 : 8 - n;
	for (int i = 0, j = 0; i < 8; i++) {
		uint16_t w = i >= gap && i < gap + zeros ? 0 : words[j++];

		out[2 * i] = (uint8_t)(w >> 8);
		out[2 * i + 1] = (uint8_t)w;
	}
	return p;
}

/* The address grammar above, for np_cidr_parse() (addr.c): one grammar for every address text. */
const uint8_t *np__scan_ip4(const uint8_t *p, uint8_t out[4])
{
	return parse_ip4(p, out);
}

const uint8_t *np__scan_ip6(const uint8_t *p, uint8_t out[16])
{
	return parse_ip6(p, out);
}

/*
 * The offset of the first CR or LF in p[0..n), or n when there is none.
 * With SSE2 (every x86-64) 16 bytes are compared at a time; the last block
 * is the 16 bytes that end at n, overlapping the one before, so nothing past
 * n is ever read.
 */
static size_t find_cr_or_lf(const uint8_t *p, size_t n)
{
	size_t i = 0;

#ifdef __SSE2__
	if (n >= 16) {
		const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
		for (;;) {
			size_t at = i + 16 <= n ? i : n - 16;
			__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + at));
			unsigned hits = (unsigned)_mm_movemask_epi8(
				_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));
			if (hits)
				return at + (size_t)__builtin_ctz(hits);
			if (at + 16 >= n)
				return n;
			i = at + 16;
		}
	}
#endif
	for (; i < n; i++)
		if (p[i] == '\r' || p[i] == '\n')
			return i;
	return n;
}

/*
 * Find the CR of the line's CRLF: a line of at most `limit` bytes has its CR
 * at offset limit - 2 at the latest. Returns the CR's offset, NP_EAGAIN when
 * the line may still end in time, or an error for a lone CR or LF or a line
 * that is already too long. A lone LF is NP_ELINE wherever it is, so the
 * error does not depend on whether the CR had arrived yet.
 */
static int find_line_end(const uint8_t *p, size_t len, size_t limit)
{
	size_t scan = len < limit - 1 ? len : limit - 1;
	size_t at = find_cr_or_lf(p, scan);

	if (at < scan) {
		if (p[at] == '\n')
			return NP_ELINE;
		if (at + 1 == len)
			return NP_EAGAIN;
		return p[at + 1] == '\n' ? (int)at : NP_ELINE;
	}
	if (len < limit - 1)
		return NP_EAGAIN;
	return limit < NP_V1_MAX_LEN ? NP_ETOOBIG : NP_ETOOLONG;
}

/*
 * Judge the protocol word q[0..n) from its first byte on, complete line or
 * not, so that the error a byte stream gets does not depend on how it was
 * segmented. Returns 0 while it can still become "TCP4 ", "TCP6 " or
 * "UNKNOWN" followed by SP or CR; NP_ELINE for "TCP4" or "TCP6" ended by
 * the CR (the addresses are missing); NP_EFAMILY for anything else.
 */
static int check_proto(const uint8_t *q, size_t n)
{
	static const char *const tokens[] = {"TCP4 ", "TCP6 ", "UNKNOWN ", "UNKNOWN\r"};

	/* The common case first, without a call: a whole "TCP4 " or "TCP6 ". */
	if (n >= 5 && q[0] == 'T' && q[1] == 'C' && q[2] == 'P' && (q[3] == '4' || q[3] == '6') &&
	    q[4] == ' ')
		return 0;

	for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
		size_t t = strlen(tokens[i]);
		if (memcmp(q, tokens[i], n < t ? n : t) == 0)
			return 0;
	}
	if (n >= 5 && q[4] == '\r' && (memcmp(q, "TCP4", 4) == 0 || memcmp(q, "TCP6", 4) == 0))
		return NP_ELINE;
	return NP_EFAMILY;
}

int np__parse_v1(const uint8_t *p, size_t len, size_t max_len, struct np_header *hdr)
{
	size_t limit = max_len < NP_V1_MAX_LEN ? max_len : NP_V1_MAX_LEN;

	if (len < V1_PREFIX_LEN)
		return memcmp(p, v1_prefix, len) != 0 ? NP_ENOTPROXY : NP_EAGAIN;
	if (memcmp(p, v1_prefix, V1_PREFIX_LEN) != 0)
		return NP_ENOTPROXY;
	if (limit < sizeof("PROXY UNKNOWN\r\n") - 1)
		return NP_ETOOBIG;

	int r = check_proto(p + V1_PREFIX_LEN, len - V1_PREFIX_LEN);
	if (r != 0)
		return r;
	int cr = find_line_end(p, len, limit);
	if (cr < 0)
		return cr;

	const uint8_t *q = p + V1_PREFIX_LEN, *end = p + cr;
	size_t rest = (size_t)(end - q);
	uint8_t family, alen;

	if (rest >= 7 && memcmp(q, "UNKNOWN", 7) == 0 && (rest == 7 || q[7] == ' ')) {
		/* Whatever follows is ignored (spec 2.1); find_line_end() saw no LF in it. */
		hdr->version = 1;
		hdr->command = NP_CMD_LOCAL;
		hdr->family = NP_AF_UNSPEC;
		hdr->transport = NP_TRANSPORT_UNSPEC;
		hdr->v1_proto = NP_V1_UNKNOWN;
		hdr->tlv = NULL;
		hdr->tlv_len = 0;
		return cr + 2;
	}
	if (rest >= 5 && memcmp(q, "TCP4 ", 5) == 0) {
		family = NP_AF_INET;
		alen = 4;
	} else if (rest >= 5 && memcmp(q, "TCP6 ", 5) == 0) {
		family = NP_AF_INET6;
		alen = 16;
	} else {
		return NP_EFAMILY; /* not reached: check_proto() has seen the whole word */
	}
	q += 5;

	uint8_t src[16], dst[16];
	unsigned sport, dport;

	q = alen == 4 ? parse_ip4(q, src) : parse_ip6(q, src);
	if (!q || *q++ != ' ')
		return NP_EADDRESS;
	q = alen == 4 ? parse_ip4(q, dst) : parse_ip6(q, dst);
	if (!q || *q++ != ' ')
		return NP_EADDRESS;
	if (!(q = parse_dec(q, 5, 65535, &sport)) || *q++ != ' ')
		return NP_EPORT;
	if (!(q = parse_dec(q, 5, 65535, &dport)))
		return NP_EPORT;
	if (q != end)
		return NP_ELINE;

	hdr->version = 1;
	hdr->command = NP_CMD_PROXY;
	hdr->family = family;
	hdr->transport = NP_TRANSPORT_STREAM;
	hdr->v1_proto = family == NP_AF_INET ? NP_V1_TCP4 : NP_V1_TCP6;
	memcpy(hdr->src.ip6, src, alen);
	memcpy(hdr->dst.ip6, dst, alen);
	hdr->src.port = (uint16_t)sport;
	hdr->dst.port = (uint16_t)dport;
	hdr->tlv = NULL;
	hdr->tlv_len = 0;
	return cr + 2;
}

int np_build_v1(void *buf, size_t cap, const struct np_header *hdr)
{
	char line[NP_V1_MAX_LEN + 1], *w = line;
	int tcp4 = hdr->family == NP_AF_INET, tcp6 = hdr->family == NP_AF_INET6;

	memcpy(w, v1_prefix, V1_PREFIX_LEN);
	w += V1_PREFIX_LEN;
	if (hdr->command != NP_CMD_PROXY || hdr->transport != NP_TRANSPORT_STREAM || !(tcp4 || tcp6)) {
		memcpy(w, "UNKNOWN", 7);
		w += 7;
	} else {
		memcpy(w, tcp4 ? "TCP4 " : "TCP6 ", 5);
		w += 5;
		w += tcp4 ? np__format_ip4(w, hdr->src.ip4) : np__format_ip6(w, hdr->src.ip6);
		*w++ = ' ';
		w += tcp4 ? np__format_ip4(w, hdr->dst.ip4) : np__format_ip6(w, hdr->dst.ip6);
		*w++ = ' ';
		w += np__format_u16(w, hdr->src.port);
		*w++ = ' ';
		w += np__format_u16(w, hdr->dst.port);
	}
	*w++ = '\r';
	*w++ = '\n';

	size_t n = (size_t)(w - line);
	if (n > cap)
		return NP_ENOSPC;
	memcpy(buf, line, n);
	return (int)n;
}
