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

static const char v1_prefix[] = "PROXY ";
#define V1_PREFIX_LEN 6

/* Digits are the only bytes whose value we need; everything else is -1. */
static inline int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static inline int is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

/*
 * A decimal number of at most max_digits digits and no leading zero, at most
 * max. Returns the byte after it, or NULL.
 */
static const uint8_t *parse_dec(const uint8_t *p, const uint8_t *end, unsigned max_digits,
				unsigned max, unsigned *out)
{
	const uint8_t *start = p;
	unsigned v = 0;

	if (p == end || !is_digit(*p))
		return NULL;
	if (*p == '0') {
		*out = 0;
		return p + 1 < end && is_digit(p[1]) ? NULL : p + 1;
	}
	while (p < end && is_digit(*p)) {
		if ((unsigned)(p - start) == max_digits)
			return NULL;
		v = v * 10 + (unsigned)(*p - '0');
		p++;
	}
	if (v > max)
		return NULL;
	*out = v;
	return p;
}

static const uint8_t *parse_ip4(const uint8_t *p, const uint8_t *end, uint8_t out[4])
{
	for (int i = 0; i < 4; i++) {
		unsigned octet;

		if (i > 0) {
			if (p == end || *p != '.')
				return NULL;
			p++;
		}
		p = parse_dec(p, end, 3, 255, &octet);
		if (!p)
			return NULL;
		out[i] = (uint8_t)octet;
	}
	return p;
}

/*
 * Hex groups of 1 to 4 digits separated by ':', at most one "::" standing for
 * one or more zero groups, optionally ending in a dotted quad: exactly 128
 * bits. Returns the byte after the address, or NULL.
 */
static const uint8_t *parse_ip6(const uint8_t *p, const uint8_t *end, uint8_t out[16])
{
	uint16_t words[8];
	int n = 0, gap = -1;

	if (p < end && *p == ':') {
		if (p + 1 == end || p[1] != ':')
			return NULL;
		gap = 0;
		p += 2;
		if (p == end || *p == ' ')
			goto expand;
	}
	for (;;) {
		const uint8_t *group = p;
		unsigned v = 0;
		int digits = 0, d;

		while (p < end && digits < 5 && (d = hexval(*p)) >= 0) {
			v = v << 4 | (unsigned)d;
			digits++;
			p++;
		}
		if (digits == 0)
			return NULL;
		if (p < end && *p == '.') {
			uint8_t quad[4];

			if (n > 6)
				return NULL;
			p = parse_ip4(group, end, quad);
			if (!p)
				return NULL;
			words[n++] = (uint16_t)(quad[0] << 8 | quad[1]);
			words[n++] = (uint16_t)(quad[2] << 8 | quad[3]);
			break;
		}
		if (digits > 4 || n == 8)
			return NULL;
		words[n++] = (uint16_t)v;
		if (p == end || *p != ':')
			break;
		p++;
		if (p < end && *p == ':') {
			if (gap >= 0)
				return NULL;
			gap = n;
			p++;
			if (p == end || *p == ' ')
				break;
		}
	}
expand:
	if (gap < 0 ? n != 8 : n > 7)
		return NULL;
	int zeros = 8 - n;
	for (int i = 0, j = 0; i < 8; i++) {
		uint16_t w = 0;

		if (gap >= 0 && i >= gap && i < gap + zeros)
			w = 0;
		else
			w = words[j++];
		out[2 * i] = (uint8_t)(w >> 8);
		out[2 * i + 1] = (uint8_t)w;
	}
	return p;
}

static const uint8_t *expect_space(const uint8_t *p, const uint8_t *end)
{
	return p && p < end && *p == ' ' ? p + 1 : NULL;
}

/*
 * Find the CR of the line's CRLF within the first `limit` bytes. Returns its
 * offset, NP_EAGAIN when the line may still end in time, or an error for a
 * lone CR or LF or a line that is already too long.
 */
static int find_line_end(const uint8_t *p, size_t len, size_t limit)
{
	/* The CR of a line of `limit` bytes sits at limit - 2. */
	size_t scan = len < limit - 1 ? len : limit - 1;

	for (size_t i = V1_PREFIX_LEN; i < scan; i++) {
		if (p[i] == '\n')
			return NP_ELINE;
		if (p[i] == '\r') {
			if (i + 1 == len)
				return NP_EAGAIN;
			return p[i + 1] == '\n' ? (int)i : NP_ELINE;
		}
	}
	if (len < limit - 1)
		return NP_EAGAIN;
	return limit < NP_V1_MAX_LEN ? NP_ETOOBIG : NP_ETOOLONG;
}

int np__parse_v1(const uint8_t *p, size_t len, size_t max_len, struct np_header *hdr)
{
	size_t limit = max_len < NP_V1_MAX_LEN ? max_len : NP_V1_MAX_LEN;
	size_t head = len < V1_PREFIX_LEN ? len : V1_PREFIX_LEN;

	if (memcmp(p, v1_prefix, head) != 0)
		return NP_ENOTPROXY;
	if (limit < V1_PREFIX_LEN + 3)
		return NP_ETOOBIG;
	if (len < V1_PREFIX_LEN)
		return NP_EAGAIN;

	int cr = find_line_end(p, len, limit);
	if (cr < 0)
		return cr;

	const uint8_t *end = p + cr, *q = p + V1_PREFIX_LEN;
	size_t rest = (size_t)(end - q);
	uint8_t family;

	if (rest >= 7 && memcmp(q, "UNKNOWN", 7) == 0 && (rest == 7 || q[7] == ' ')) {
		/* Whatever follows is ignored (spec 2.1); find_line_end() saw no CR or LF in it. */
		hdr->version = 1;
		hdr->command = NP_CMD_LOCAL;
		hdr->family = NP_AF_UNSPEC;
		hdr->transport = NP_TRANSPORT_UNSPEC;
		hdr->v1_proto = NP_V1_UNKNOWN;
		hdr->tlv = NULL;
		hdr->tlv_len = 0;
		return cr + 2;
	}
	if (rest >= 5 && memcmp(q, "TCP4 ", 5) == 0)
		family = NP_AF_INET;
	else if (rest >= 5 && memcmp(q, "TCP6 ", 5) == 0)
		family = NP_AF_INET6;
	else
		return NP_EFAMILY;
	q += 5;

	struct np_endpoint src, dst;
	unsigned sport, dport;

	if (family == NP_AF_INET) {
		q = parse_ip4(q, end, src.ip4);
		if (!(q = expect_space(q, end)))
			return NP_EADDRESS;
		q = parse_ip4(q, end, dst.ip4);
	} else {
		q = parse_ip6(q, end, src.ip6);
		if (!(q = expect_space(q, end)))
			return NP_EADDRESS;
		q = parse_ip6(q, end, dst.ip6);
	}
	if (!(q = expect_space(q, end)))
		return NP_EADDRESS;
	q = parse_dec(q, end, 5, 65535, &sport);
	if (!(q = expect_space(q, end)))
		return NP_EPORT;
	q = parse_dec(q, end, 5, 65535, &dport);
	if (!q)
		return NP_EPORT;
	if (q != end)
		return NP_ELINE;

	src.port = (uint16_t)sport;
	dst.port = (uint16_t)dport;
	hdr->version = 1;
	hdr->command = NP_CMD_PROXY;
	hdr->family = family;
	hdr->transport = NP_TRANSPORT_STREAM;
	hdr->v1_proto = family == NP_AF_INET ? NP_V1_TCP4 : NP_V1_TCP6;
	hdr->src = src;
	hdr->dst = dst;
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
