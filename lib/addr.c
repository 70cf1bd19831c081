/*
 * addr.c - endpoints as text and as socket addresses.
 *
 * The text forms are written by hand rather than with inet_ntop(): this is
 * on the v1 builder's path. IPv6 text is RFC 5952 section 4 (lower case,
 * longest zero run compressed) with hex groups only: section 5's dotted
 * tail for v4-mapped addresses, which inet_ntop() writes, is not used, so
 * one address always has one text, and spec 2.1 asks for hex groups.
 */
#include <netinet/in.h>
#include <sys/un.h>

#include "internal.h"

size_t np__format_u16(char *out, uint16_t v)
{
	char digits[5];
	size_t n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = digits[n - 1 - i];
	return n;
}

size_t np__format_ip4(char *out, const uint8_t ip[4])
{
	char *w = out;

	for (int i = 0; i < 4; i++) {
		if (i)
			*w++ = '.';
		w += np__format_u16(w, ip[i]);
	}
	return (size_t)(w - out);
}

size_t np__format_ip6(char *out, const uint8_t ip[16])
{
	static const char hex[] = "0123456789abcdef";
	uint16_t g[8];
	int best = -1, best_len = 1; /* RFC 5952 4.2.2: a lone zero group stays */
	char *w = out;

	for (int i = 0; i < 8; i++)
		g[i] = (uint16_t)(ip[2 * i] << 8 | ip[2 * i + 1]);
	for (int i = 0; i < 8;) {
		int j = i;

		while (j < 8 && g[j] == 0)
			j++;
		if (j - i > best_len) {
			best = i;
			best_len = j - i;
		}
		i = j > i ? j : i + 1;
	}
	for (int i = 0; i < 8; i++) {
		if (i == best) {
			*w++ = ':';
			*w++ = ':';
			i += best_len - 1;
			continue;
		}
		if (i && i != best + best_len)
			*w++ = ':';
		int started = 0;
		for (int shift = 12; shift >= 0; shift -= 4) {
			unsigned nib = g[i] >> shift & 0xF;
			if (nib || started || shift == 0) {
				*w++ = hex[nib];
				started = 1;
			}
		}
	}
	return (size_t)(w - out);
}

int np_format_addr(char *out, size_t cap, uint8_t family, const struct np_endpoint *ep)
{
	char text[NP_ADDRSTRLEN];
	const char *src = text;
	size_t n;

	switch (family) {
	case NP_AF_INET:
		n = np__format_ip4(text, ep->ip4);
		break;
	case NP_AF_INET6:
		n = np__format_ip6(text, ep->ip6);
		break;
	case NP_AF_UNIX:
		src = (const char *)ep->path;
		n = strnlen(src, NP_UNIX_PATH_LEN);
		break;
	default:
		return NP_EINVAL;
	}
	if (n >= cap)
		return NP_ENOSPC;
	memcpy(out, src, n);
	out[n] = '\0';
	return (int)n;
}

int np_endpoint_to_sockaddr(const struct np_header *hdr, const struct np_endpoint *ep,
			    struct sockaddr_storage *ss)
{
	if (!np_has_addresses(hdr))
		return NP_EINVAL;
	memset(ss, 0, sizeof(*ss));
	switch (hdr->family) {
	case NP_AF_INET: {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(ep->port);
		memcpy(&sin->sin_addr, ep->ip4, 4);
		return (int)sizeof(*sin);
	}
	case NP_AF_INET6: {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(ep->port);
		memcpy(&sin6->sin6_addr, ep->ip6, 16);
		return (int)sizeof(*sin6);
	}
	case NP_AF_UNIX: {
		struct sockaddr_un *sun = (struct sockaddr_un *)ss;
		_Static_assert(sizeof(sun->sun_path) == NP_UNIX_PATH_LEN, "sun_path is 108 bytes on Linux");
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, ep->path, NP_UNIX_PATH_LEN);
		return (int)sizeof(*sun);
	}
	}
	return NP_EINVAL;
}

/*
 * One endpoint from the socket address sa of len bytes, reading none past
 * them. The family is read only once len covers it, and an INET or INET6
 * address must be whole. A UNIX address may be shorter than its struct, as
 * accept() and getpeername() give it (an unnamed peer is the family alone):
 * the path is what len covers, NUL-padded to its 108 bytes.
 */
static int endpoint_from_sockaddr(struct np_endpoint *ep, const struct sockaddr *sa, socklen_t len)
{
	if (!sa || len < (socklen_t)sizeof(sa_family_t))
		return NP_EINVAL;
	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		if (len < (socklen_t)sizeof(*sin))
			return NP_EINVAL;
		memcpy(ep->ip4, &sin->sin_addr, 4);
		ep->port = ntohs(sin->sin_port);
		return NP_AF_INET;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		if (len < (socklen_t)sizeof(*sin6))
			return NP_EINVAL;
		memcpy(ep->ip6, &sin6->sin6_addr, 16);
		ep->port = ntohs(sin6->sin6_port);
		return NP_AF_INET6;
	}
	case AF_UNIX: {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
		size_t plen = (size_t)len - offsetof(struct sockaddr_un, sun_path);

		if (plen > NP_UNIX_PATH_LEN)
			plen = NP_UNIX_PATH_LEN;
		memcpy(ep->path, sun->sun_path, plen);
		memset(ep->path + plen, 0, NP_UNIX_PATH_LEN - plen);
		ep->port = 0;
		return NP_AF_UNIX;
	}
	}
	return NP_EINVAL;
}

int np_header_from_sockaddr_len(struct np_header *hdr, const struct sockaddr *src, socklen_t srclen,
				const struct sockaddr *dst, socklen_t dstlen)
{
	struct np_endpoint s, d;
	int fs, fd;

	if (!hdr)
		return NP_EINVAL;
	fs = endpoint_from_sockaddr(&s, src, srclen);
	fd = endpoint_from_sockaddr(&d, dst, dstlen);
	if (fs < 0 || fs != fd)
		return NP_EINVAL;
	hdr->version = 2;
	hdr->command = NP_CMD_PROXY;
	hdr->family = (uint8_t)fs;
	hdr->transport = NP_TRANSPORT_STREAM;
	hdr->v1_proto = NP_V1_NONE;
	hdr->src = s;
	hdr->dst = d;
	hdr->tlv = NULL;
	hdr->tlv_len = 0;
	return 0;
}

/* The length np_header_from_sockaddr() has always trusted: the whole struct of the family. */
static socklen_t whole_sockaddr_len(const struct sockaddr *sa)
{
	switch (sa ? sa->sa_family : AF_UNSPEC) {
	case AF_INET:
		return sizeof(struct sockaddr_in);
	case AF_INET6:
		return sizeof(struct sockaddr_in6);
	case AF_UNIX:
		return sizeof(struct sockaddr_un);
	}
	return 0;
}

int np_header_from_sockaddr(struct np_header *hdr, const struct sockaddr *src,
			    const struct sockaddr *dst)
{
	return np_header_from_sockaddr_len(hdr, src, whole_sockaddr_len(src), dst,
					   whole_sockaddr_len(dst));
}

/*
 * Address blocks: who may send headers. The text is copied so that the
 * address grammar, which stops at the first byte that cannot continue an
 * address, always finds a terminator within the block's own bytes.
 */
int np_cidr_parse(const char *text, size_t len, struct np_cidr *out)
{
	uint8_t buf[64], addr[16] = {0};
	const uint8_t *p;
	size_t alen = 0;
	unsigned prefix, max;
	uint8_t family;

	if (!text || !out)
		return NP_EINVAL;
	while (alen < len && text[alen] != '/')
		alen++;
	if (alen == 0 || alen >= sizeof(buf))
		return NP_EADDRESS;
	memcpy(buf, text, alen);
	buf[alen] = '\0';
	if (memchr(buf, ':', alen)) {
		family = NP_AF_INET6;
		max = 128;
		p = np__scan_ip6(buf, addr);
	} else {
		family = NP_AF_INET;
		max = 32;
		p = np__scan_ip4(buf, addr);
	}
	if (!p || p != buf + alen)
		return NP_EADDRESS;
	prefix = max;
	if (alen < len) {
		size_t i = alen + 1;

		/* One to three digits, no leading zero: "/08" is a typo, not a prefix. */
		if (i == len || len - i > 3 || (text[i] == '0' && len - i > 1))
			return NP_EINVAL;
		for (prefix = 0; i < len; i++) {
			if (text[i] < '0' || text[i] > '9')
				return NP_EINVAL;
			prefix = prefix * 10 + (unsigned)(text[i] - '0');
		}
		if (prefix > max)
			return NP_EINVAL;
	}
	/*
	 * A peer's v4-mapped address is matched as the IPv4 address it is, so a
	 * block inside ::ffff:0:0/96 could never match: it is refused, and its
	 * IPv4 form is what the user meant.
	 */
	if (family == NP_AF_INET6 && prefix >= 96 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)addr)) {
		/* What the user meant, for the message: the same block written as IPv4. */
		memmove(addr, addr + 12, 4);
		memset(addr + 4, 0, 12);
		family = NP_AF_INET;
		prefix -= 96;
		if (prefix % 8)
			addr[prefix / 8] &= (uint8_t)(0xff << (8 - prefix % 8));
		for (unsigned i = (prefix + 7) / 8; i < 4; i++)
			addr[i] = 0;
		out->family = family;
		out->prefix = (uint8_t)prefix;
		memcpy(out->addr, addr, 16);
		return NP_EFAMILY;
	}
	/* Host bits are cleared, so that a match compares whole bytes and one masked byte. */
	if (prefix % 8)
		addr[prefix / 8] &= (uint8_t)(0xff << (8 - prefix % 8));
	for (unsigned i = (prefix + 7) / 8; i < 16; i++)
		addr[i] = 0;
	out->family = family;
	out->prefix = (uint8_t)prefix;
	memcpy(out->addr, addr, 16);
	return 0;
}

int np_cidr_match(const struct np_cidr *c, const struct sockaddr *sa)
{
	const uint8_t *a;
	unsigned whole, rest;

	if (!c || !sa)
		return 0;
	if (sa->sa_family == AF_INET) {
		if (c->family != NP_AF_INET)
			return 0;
		a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *in6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		/* A dual-stack socket shows an IPv4 peer as ::ffff:a.b.c.d: it is that IPv4 peer. */
		if (IN6_IS_ADDR_V4MAPPED(in6)) {
			if (c->family != NP_AF_INET)
				return 0;
			a = in6->s6_addr + 12;
		} else {
			if (c->family != NP_AF_INET6)
				return 0;
			a = in6->s6_addr;
		}
	} else {
		return 0;
	}
	whole = c->prefix / 8;
	rest = c->prefix % 8;
	if (memcmp(a, c->addr, whole) != 0)
		return 0;
	return rest == 0 || ((a[whole] ^ c->addr[whole]) & (0xff << (8 - rest))) == 0;
}

int np_format_sockaddr(char *out, size_t cap, const struct sockaddr *sa, socklen_t len)
{
	char text[NP_UNIX_PATH_LEN + 8];
	size_t n = 0;

	if (!out || !sa || len < (socklen_t)sizeof(sa_family_t))
		return NP_EINVAL;
	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		if (len < (socklen_t)sizeof(*sin))
			return NP_EINVAL;
		n = np__format_ip4(text, (const uint8_t *)&sin->sin_addr);
		text[n++] = ':';
		n += np__format_u16(text + n, ntohs(sin->sin_port));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		if (len < (socklen_t)sizeof(*sin6))
			return NP_EINVAL;
		text[n++] = '[';
		n += np__format_ip6(text + n, sin6->sin6_addr.s6_addr);
		text[n++] = ']';
		text[n++] = ':';
		n += np__format_u16(text + n, ntohs(sin6->sin6_port));
		break;
	}
	case AF_UNIX: {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
		size_t plen = (size_t)len - offsetof(struct sockaddr_un, sun_path);

		if (plen > sizeof(sun->sun_path))
			plen = sizeof(sun->sun_path);
		memcpy(text, "unix:", 5);
		n = 5;
		if (plen > 0 && sun->sun_path[0] == '\0') {
			/* Abstract: the name is every byte after the NUL, as len says. */
			text[n++] = '@';
			memcpy(text + n, sun->sun_path + 1, plen - 1);
			n += plen - 1;
		} else {
			size_t l = strnlen(sun->sun_path, plen);

			memcpy(text + n, sun->sun_path, l);
			n += l;
		}
		break;
	}
	default:
		return NP_EINVAL;
	}
	if (n >= cap)
		return NP_ENOSPC;
	memcpy(out, text, n);
	out[n] = '\0';
	return (int)n;
}
