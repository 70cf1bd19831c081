/*
 * fuzz_parse.c - np_parse() on arbitrary bytes, and everything a caller does
 * with a header it accepted: walk and search the TLVs, decode SSL and the
 * vendor TLVs, format the endpoints and turn them into socket addresses.
 *
 * Invariants (abort() on violation):
 *   - the result is the header length (15 <= n <= size, a v1 line <= 107
 *     bytes ending in CRLF, a v2 header 16 + len), NP_EAGAIN or a parse error;
 *     *hdr is left alone unless the result is positive;
 *   - the parse is a function of the header bytes alone: data[0..n) parses
 *     the same, and every shorter prefix (tested sparsely, each in a buffer of
 *     exactly its size) of a header or of an incomplete input is NP_EAGAIN,
 *     and of rejected bytes NP_EAGAIN or an error, never a header;
 *   - np_parse_max() agrees with np_parse() on a header within its cap and
 *     says NP_ETOOBIG for one beyond it; it waits only where np_parse()
 *     waits (or says NP_ETOOBIG) and rejects what np_parse() rejects;
 *   - a complete v1 line is accepted exactly when an independent reading
 *     (single spaces, inet_pton() addresses, strict ports) accepts it, with
 *     the same fields;
 *   - the fields are those of the bytes; hdr.tlv lies inside data[0..n) and
 *     ends with it; the TLVs tile it; CRC32C, UNIQUE_ID and SSL obey the spec;
 *   - np_tlv_find()/np_ssl_find() give the first match of a plain walk;
 *   - np_endpoint_to_sockaddr() and np_header_from_sockaddr(_len)() give the
 *     endpoints back;
 *   - np_format_addr() gives text that inet_pton() reads back to the same
 *     bytes (and equals inet_ntop() where that is RFC 5952 hex-only).
 *
 * Built with libFuzzer (make fuzz) and with fuzz/replay.c (make replay).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "internal.h"
#include "check.h"
#include "netproxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/* np_parse_max() (max != 0) or np_parse() on a copy of data[0..len) in a buffer of exactly len bytes. */
static int parse_exact(const uint8_t *data, size_t len, size_t max, struct np_header *hdr)
{
	uint8_t *copy = malloc(len);
	uint8_t dummy;
	int r;

	if (len)
		CHECK(copy != NULL);
	if (!copy)
		copy = &dummy;
	if (len)
		memcpy(copy, data, len);
	r = max ? np_parse_max(copy, len, max, hdr) : np_parse(copy, len, hdr);
	if (copy != &dummy)
		free(copy);
	return r;
}

static int is_parse_error(int r)
{
	/* np_parse() never caps below NP_V2_MAX_LEN, so never says NP_ETOOBIG. */
	return r <= NP_EAGAIN && r >= NP_ECRC && r != NP_ETOOBIG;
}

/* Field by field; tlv compared as an offset from each header's buffer. */
static void check_same_header(const struct np_header *a, const uint8_t *abase,
			      const struct np_header *b, const uint8_t *bbase)
{
	CHECK(a->version == b->version);
	CHECK(a->command == b->command);
	CHECK(a->family == b->family);
	CHECK(a->transport == b->transport);
	CHECK(a->v1_proto == b->v1_proto);
	CHECK(a->tlv_len == b->tlv_len);
	CHECK((a->tlv == NULL) == (b->tlv == NULL));
	if (a->tlv)
		CHECK(a->tlv - abase == b->tlv - bbase);
	if (np_has_addresses(a)) {
		size_t n = a->family == NP_AF_INET ? 4 : a->family == NP_AF_INET6 ? 16 : NP_UNIX_PATH_LEN;
		CHECK(memcmp(a->src.path, b->src.path, n) == 0);
		CHECK(memcmp(a->dst.path, b->dst.path, n) == 0);
		CHECK(a->src.port == b->src.port);
		CHECK(a->dst.port == b->dst.port);
	}
}



/* Walk area[0..len), which the parser said is well formed: the TLVs must tile it exactly. */
static size_t walk_tiles(const uint8_t *area, size_t len)
{
	struct np_tlv_iter it;
	struct np_tlv t;
	const uint8_t *expect = area;
	size_t n = 0;
	int r;

	np_tlv_iter_init(&it, area, len);
	if (len == 0) {
		/* An empty list (an SSL TLV without sub-TLVs has sub == NULL). */
		CHECK(np_tlv_next(&it, &t) == 0);
		return 0;
	}
	while ((r = np_tlv_next(&it, &t)) == 1) {
		CHECK(t.value == expect + 3);
		CHECK(t.type == expect[0]);
		CHECK(t.len == np__load16(expect + 1));
		CHECK(t.value + t.len <= area + len);
		expect = t.value + t.len;
		n++;
	}
	CHECK(r == 0);
	CHECK(expect == area + len);
	CHECK(it.left == 0);
	return n;
}

static void check_ssl(const struct np_tlv *t)
{
	struct np_ssl ssl;
	struct np_tlv sub, want;

	/* The parser validated the area: every SSL TLV decodes. */
	CHECK(np_ssl_decode(t, &ssl) == 0);
	CHECK(t->len >= 5);
	CHECK(ssl.client == t->value[0]);
	CHECK(ssl.verify == np__load32(t->value + 1));
	CHECK(ssl.sub_len == t->len - 5u);
	if (ssl.sub_len)
		CHECK(ssl.sub == t->value + 5);
	walk_tiles(ssl.sub, ssl.sub_len);
	for (unsigned st = NP_SSL_VERSION; st <= NP_SSL_CLIENT_CERT + 1; st++) {
		int got = np_ssl_find(&ssl, (uint8_t)st, &sub);
		int w = walk_find(ssl.sub, ssl.sub_len, (uint8_t)st, &want);
		check_find_result(got, &sub, w, &want);
	}
	int verified = ssl.verify == 0 &&
		       (ssl.client & (NP_SSL_CLIENT_CERT_CONN | NP_SSL_CLIENT_CERT_SESS)) != 0;
	CHECK(!np_ssl_verified(&ssl) == !verified);
}


/* The v2 TLV area of a parsed header, hdr_bytes[0..n) being the whole header. */
static void check_tlvs(const struct np_header *hdr, const uint8_t *hdr_bytes, size_t n, uint8_t extra_type)
{
	static const uint8_t types[] = {NP_TLV_ALPN, NP_TLV_AUTHORITY, NP_TLV_CRC32C, NP_TLV_NOOP,
					NP_TLV_UNIQUE_ID, NP_TLV_SSL, NP_TLV_NETNS, NP_TLV_GCP,
					NP_TLV_AWS, NP_TLV_AZURE, 0x00, 0xFF};
	struct np_tlv_iter it;
	struct np_tlv t, got, want;

	walk_tiles(hdr->tlv, hdr->tlv_len);

	np_tlv_iter_init(&it, hdr->tlv, hdr->tlv_len);
	while (np_tlv_next(&it, &t) == 1) {
		switch (t.type) {
		case NP_TLV_CRC32C: {
			/* The stored value is the sum over the header with it read as zeros. */
			static const uint8_t zero4[4];
			size_t before = (size_t)(t.value - hdr_bytes);
			CHECK(t.len == 4);
			uint32_t sum = np__crc32c_sw(0, hdr_bytes, before);
			sum = np__crc32c_sw(sum, zero4, 4);
			sum = np__crc32c_sw(sum, t.value + 4, n - before - 4);
			CHECK(sum == np__load32(t.value));
			break;
		}
		case NP_TLV_UNIQUE_ID:
			CHECK(t.len <= NP_UNIQUE_ID_MAX);
			break;
		case NP_TLV_SSL:
			check_ssl(&t);
			break;
		default: {
			struct np_ssl ssl;
			CHECK(np_ssl_decode(&t, &ssl) == NP_ETLVVALUE);
			break;
		}
		}
		check_vendor(&t);
	}

	for (size_t i = 0; i <= sizeof(types); i++) {
		uint8_t type = i < sizeof(types) ? types[i] : extra_type;
		int g = np_tlv_find(hdr, type, &got);
		int w = walk_find(hdr->tlv, hdr->tlv_len, type, &want);
		check_find_result(g, &got, w, &want);
	}
}

static void check_endpoint(const struct np_header *hdr, const struct np_endpoint *ep)
{
	char text[NP_UNIX_PATH_LEN + 1];
	struct sockaddr_storage ss;
	int n, sl;

	sl = np_endpoint_to_sockaddr(hdr, ep, &ss);
	if (!np_has_addresses(hdr)) {
		CHECK(sl == NP_EINVAL);
		return;
	}

	n = np_format_addr(text, sizeof(text), hdr->family, ep);
	CHECK(n >= 0 && (size_t)n < sizeof(text));
	CHECK(strlen(text) == (size_t)n);
	/* One byte short of room for the NUL is NP_ENOSPC; exactly enough is fine. */
	if (n > 0) {
		char small[NP_UNIX_PATH_LEN + 1];
		CHECK(np_format_addr(small, (size_t)n, hdr->family, ep) == NP_ENOSPC);
		CHECK(np_format_addr(small, (size_t)n + 1, hdr->family, ep) == n);
		CHECK(memcmp(small, text, (size_t)n + 1) == 0);
	}

	switch (hdr->family) {
	case NP_AF_INET: {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		struct in_addr a;
		CHECK(n < NP_ADDRSTRLEN);
		CHECK(inet_pton(AF_INET, text, &a) == 1);
		CHECK(memcmp(&a, ep->ip4, 4) == 0);
		CHECK(sl == (int)sizeof(*sin));
		CHECK(sin->sin_family == AF_INET);
		CHECK(ntohs(sin->sin_port) == ep->port);
		CHECK(memcmp(&sin->sin_addr, ep->ip4, 4) == 0);
		break;
	}
	case NP_AF_INET6: {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		struct in6_addr a;
		char ntop[INET6_ADDRSTRLEN];
		CHECK(n < NP_ADDRSTRLEN);
		CHECK(inet_pton(AF_INET6, text, &a) == 1);
		CHECK(memcmp(&a, ep->ip6, 16) == 0);
		CHECK(strchr(text, '.') == NULL);
		/* glibc's inet_ntop() follows RFC 5952 too, except for its dotted-quad tails. */
		CHECK(inet_ntop(AF_INET6, ep->ip6, ntop, sizeof(ntop)) != NULL);
		if (!strchr(ntop, '.'))
			CHECK(strcmp(ntop, text) == 0);
		CHECK(sl == (int)sizeof(*sin6));
		CHECK(sin6->sin6_family == AF_INET6);
		CHECK(ntohs(sin6->sin6_port) == ep->port);
		CHECK(memcmp(&sin6->sin6_addr, ep->ip6, 16) == 0);
		break;
	}
	case NP_AF_UNIX: {
		struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
		CHECK((size_t)n == strnlen((const char *)ep->path, NP_UNIX_PATH_LEN));
		CHECK(memcmp(text, ep->path, (size_t)n) == 0);
		CHECK(sl == (int)sizeof(*sun));
		CHECK(sun->sun_family == AF_UNIX);
		CHECK(memcmp(sun->sun_path, ep->path, NP_UNIX_PATH_LEN) == 0);
		break;
	}
	default:
		CHECK(0);
	}
}

/* Endpoints -> socket addresses -> np_header_from_sockaddr(): the same endpoints. */
static void check_from_sockaddr(const struct np_header *hdr)
{
	struct sockaddr_storage ss, sd, other;
	struct np_header back;

	if (!np_has_addresses(hdr))
		return;
	int slen = np_endpoint_to_sockaddr(hdr, &hdr->src, &ss);
	int dlen = np_endpoint_to_sockaddr(hdr, &hdr->dst, &sd);
	CHECK(slen > 0 && dlen > 0);
	/* The lengths it gives are enough for the length-aware call, and one less is not. */
	struct np_header with_len;
	memset(&with_len, 0x5A, sizeof(with_len));
	CHECK(np_header_from_sockaddr_len(&with_len, (struct sockaddr *)&ss, (socklen_t)slen,
					  (struct sockaddr *)&sd, (socklen_t)dlen) == 0);
	if (hdr->family != NP_AF_UNIX)
		CHECK(np_header_from_sockaddr_len(&back, (struct sockaddr *)&ss, (socklen_t)slen - 1,
						  (struct sockaddr *)&sd, (socklen_t)dlen) == NP_EINVAL);
	memset(&back, 0x5A, sizeof(back));
	CHECK(np_header_from_sockaddr(&back, (struct sockaddr *)&ss, (struct sockaddr *)&sd) == 0);
	if (hdr->family != NP_AF_UNIX) {
		size_t alen = hdr->family == NP_AF_INET ? 4 : 16;
		CHECK(with_len.family == back.family && with_len.version == 2);
		CHECK(memcmp(with_len.src.ip6, back.src.ip6, alen) == 0 &&
		      memcmp(with_len.dst.ip6, back.dst.ip6, alen) == 0);
		CHECK(with_len.src.port == back.src.port && with_len.dst.port == back.dst.port);
	}
	CHECK(back.version == 2 && back.command == NP_CMD_PROXY);
	CHECK(back.family == hdr->family && back.transport == NP_TRANSPORT_STREAM);
	CHECK(back.v1_proto == NP_V1_NONE && back.tlv == NULL && back.tlv_len == 0);
	size_t n = hdr->family == NP_AF_INET ? 4 : hdr->family == NP_AF_INET6 ? 16 : NP_UNIX_PATH_LEN;
	CHECK(memcmp(back.src.path, hdr->src.path, n) == 0);
	CHECK(memcmp(back.dst.path, hdr->dst.path, n) == 0);
	if (hdr->family != NP_AF_UNIX)
		CHECK(back.src.port == hdr->src.port && back.dst.port == hdr->dst.port);

	/* Mixed families are refused. */
	memset(&other, 0, sizeof(other));
	other.ss_family = hdr->family == NP_AF_INET ? AF_INET6 : AF_INET;
	CHECK(np_header_from_sockaddr(&back, (struct sockaddr *)&ss, (struct sockaddr *)&other) ==
	      NP_EINVAL);
}

/* The fields of an accepted header against the bytes data[0..n). */
static void check_fields(const struct np_header *hdr, const uint8_t *data, size_t n)
{
	if (data[0] == 'P') {
		CHECK(hdr->version == 1);
		CHECK(n <= NP_V1_MAX_LEN);
		CHECK(memcmp(data, "PROXY ", 6) == 0);
		CHECK(data[n - 2] == '\r' && data[n - 1] == '\n');
		CHECK(memchr(data, '\r', n - 2) == NULL && memchr(data, '\n', n - 2) == NULL);
		CHECK(hdr->tlv == NULL && hdr->tlv_len == 0);
		switch (hdr->v1_proto) {
		case NP_V1_TCP4:
			CHECK(memcmp(data + 6, "TCP4 ", 5) == 0);
			CHECK(hdr->command == NP_CMD_PROXY && hdr->family == NP_AF_INET);
			CHECK(hdr->transport == NP_TRANSPORT_STREAM);
			break;
		case NP_V1_TCP6:
			CHECK(memcmp(data + 6, "TCP6 ", 5) == 0);
			CHECK(hdr->command == NP_CMD_PROXY && hdr->family == NP_AF_INET6);
			CHECK(hdr->transport == NP_TRANSPORT_STREAM);
			break;
		case NP_V1_UNKNOWN:
			CHECK(memcmp(data + 6, "UNKNOWN", 7) == 0);
			CHECK(hdr->command == NP_CMD_LOCAL && hdr->family == NP_AF_UNSPEC);
			CHECK(hdr->transport == NP_TRANSPORT_UNSPEC);
			break;
		default:
			CHECK(0);
		}
		return;
	}

	CHECK(data[0] == '\r');
	CHECK(hdr->version == 2);
	CHECK(n >= NP_V2_MIN_LEN);
	CHECK(memcmp(data, np__v2_sig, NP_V2_SIG_LEN) == 0);
	CHECK(n == NP_V2_MIN_LEN + (size_t)np__load16(data + 14));
	CHECK(data[12] >> 4 == 2);
	CHECK(hdr->command == (data[12] & 0xF));
	CHECK(hdr->command <= NP_CMD_PROXY);
	CHECK(hdr->family == data[13] >> 4 && hdr->family <= NP_AF_UNIX);
	CHECK(hdr->transport == (data[13] & 0xF) && hdr->transport <= NP_TRANSPORT_DGRAM);
	CHECK(hdr->v1_proto == NP_V1_NONE);

	const uint8_t *a = data + NP_V2_MIN_LEN;
	if (hdr->command == NP_CMD_PROXY) {
		/* One of the seven listed combinations, or 0x00. */
		CHECK((hdr->family == NP_AF_UNSPEC) == (hdr->transport == NP_TRANSPORT_UNSPEC));
		switch (hdr->family) {
		case NP_AF_INET:
			CHECK(n >= NP_V2_MIN_LEN + 12);
			CHECK(memcmp(hdr->src.ip4, a, 4) == 0 && memcmp(hdr->dst.ip4, a + 4, 4) == 0);
			CHECK(hdr->src.port == np__load16(a + 8) && hdr->dst.port == np__load16(a + 10));
			break;
		case NP_AF_INET6:
			CHECK(n >= NP_V2_MIN_LEN + 36);
			CHECK(memcmp(hdr->src.ip6, a, 16) == 0 && memcmp(hdr->dst.ip6, a + 16, 16) == 0);
			CHECK(hdr->src.port == np__load16(a + 32) && hdr->dst.port == np__load16(a + 34));
			break;
		case NP_AF_UNIX:
			CHECK(n >= NP_V2_MIN_LEN + 2 * NP_UNIX_PATH_LEN);
			CHECK(memcmp(hdr->src.path, a, NP_UNIX_PATH_LEN) == 0);
			CHECK(memcmp(hdr->dst.path, a + NP_UNIX_PATH_LEN, NP_UNIX_PATH_LEN) == 0);
			CHECK(hdr->src.port == 0 && hdr->dst.port == 0);
			break;
		}
	}
	if (hdr->tlv == NULL) {
		CHECK(hdr->tlv_len == 0);
	} else {
		/* The TLV area lies inside the header and runs to its end. */
		CHECK(hdr->tlv_len > 0);
		CHECK(hdr->tlv >= a && hdr->tlv < data + n);
		CHECK(hdr->tlv + hdr->tlv_len == data + n);
	}
}

/* np_parse_max(cap) against np_parse()'s result r on the same bytes. */
/* A v1 port: 1 to 5 digits, no leading zero, at most 65535. */
static int oracle_port(const char *tok, size_t n, uint16_t *port)
{
	unsigned long v = 0;

	if (n == 0 || n > 5 || (n > 1 && tok[0] == '0'))
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (tok[i] < '0' || tok[i] > '9')
			return 0;
		v = v * 10 + (unsigned long)(tok[i] - '0');
	}
	if (v > 65535)
		return 0;
	*port = (uint16_t)v;
	return 1;
}

/* A v1 address through inet_pton() (glibc: strict dotted quads, RFC 4291 text). */
static int oracle_addr(int af, const char *tok, size_t n, uint8_t *out)
{
	char z[64];

	if (n == 0 || n >= sizeof(z) || memchr(tok, '\0', n))
		return 0;
	memcpy(z, tok, n);
	z[n] = '\0';
	return inet_pton(af, z, out) == 1;
}

/*
 * An independent reading of spec 2.1 on a complete v1 line: 1 when valid
 * (*want and *len filled), 0 when invalid, -1 when it does not judge (not
 * "PROXY ", no CRLF within 107 bytes).
 */
static int v1_oracle(const uint8_t *data, size_t size, struct np_header *want, size_t *len)
{
	size_t lim = size < NP_V1_MAX_LEN ? size : NP_V1_MAX_LEN;
	const uint8_t *cr;

	if (size < 8 || memcmp(data, "PROXY ", 6) != 0)
		return -1;
	cr = memchr(data, '\r', lim);
	if (!cr || (size_t)(cr - data) + 1 >= lim || cr[1] != '\n')
		return -1;
	size_t k = (size_t)(cr - data);
	if (memchr(data, '\n', k))
		return 0; /* a lone LF */
	*len = k + 2;

	const char *line = (const char *)data + 6;
	size_t n = k - 6;
	memset(want, 0, sizeof(*want));
	want->version = 1;
	if (n >= 7 && memcmp(line, "UNKNOWN", 7) == 0 && (n == 7 || line[7] == ' ')) {
		want->command = NP_CMD_LOCAL;
		want->v1_proto = NP_V1_UNKNOWN;
		return 1;
	}
	if (n < 5 || (memcmp(line, "TCP4 ", 5) != 0 && memcmp(line, "TCP6 ", 5) != 0))
		return 0;
	int v4 = line[3] == '4';
	want->command = NP_CMD_PROXY;
	want->family = v4 ? NP_AF_INET : NP_AF_INET6;
	want->transport = NP_TRANSPORT_STREAM;
	want->v1_proto = v4 ? NP_V1_TCP4 : NP_V1_TCP6;

	/* Exactly four tokens separated by single spaces. */
	const char *tok[4];
	size_t tlen[4], ntok = 0;
	const char *q = line + 5, *end = line + n;
	while (ntok < 4) {
		const char *sp = memchr(q, ' ', (size_t)(end - q));
		const char *te = sp ? sp : end;
		tok[ntok] = q;
		tlen[ntok++] = (size_t)(te - q);
		if (!sp)
			break;
		q = sp + 1;
	}
	if (ntok != 4 || tok[3] + tlen[3] != end)
		return 0;
	int af = v4 ? AF_INET : AF_INET6;
	if (!oracle_addr(af, tok[0], tlen[0], want->src.ip6) ||
	    !oracle_addr(af, tok[1], tlen[1], want->dst.ip6) ||
	    !oracle_port(tok[2], tlen[2], &want->src.port) ||
	    !oracle_port(tok[3], tlen[3], &want->dst.port))
		return 0;
	return 1;
}

static void check_v1_oracle(const uint8_t *data, size_t size, int r, const struct np_header *hdr)
{
	struct np_header want;
	size_t len = 0;
	int o = v1_oracle(data, size, &want, &len);

	if (r > 0 && data[0] == 'P')
		CHECK(o == 1);
	if (o == 0)
		CHECK(r < 0 && r != NP_EAGAIN);
	if (o != 1)
		return;
	CHECK(r == (int)len);
	CHECK(hdr->command == want.command && hdr->family == want.family);
	CHECK(hdr->transport == want.transport && hdr->v1_proto == want.v1_proto);
	if (want.command == NP_CMD_PROXY) {
		size_t alen = want.family == NP_AF_INET ? 4 : 16;
		CHECK(memcmp(hdr->src.ip6, want.src.ip6, alen) == 0);
		CHECK(memcmp(hdr->dst.ip6, want.dst.ip6, alen) == 0);
		CHECK(hdr->src.port == want.src.port && hdr->dst.port == want.dst.port);
	}
}

static void check_parse_max(const uint8_t *data, size_t size, int r, size_t cap)
{
	struct np_header h;
	int rm;

	if (cap == 0)
		return; /* parse_exact() reads 0 as "no cap" */
	rm = parse_exact(data, size, cap, &h);
	if (r > 0 && (size_t)r <= cap)
		CHECK(rm == r);
	else if (r > 0)
		CHECK(rm == NP_ETOOBIG);
	else if (r == NP_EAGAIN)
		CHECK(rm == NP_EAGAIN || rm == NP_ETOOBIG);
	else /* the same fault, unless the cap ends the header first */
		CHECK(rm == r || rm == NP_ETOOBIG);
	if (cap >= NP_V2_MAX_LEN)
		CHECK(rm == r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct np_header hdr, untouched, again;
	int r;

	memset(&hdr, 0xA5, sizeof(hdr));
	untouched = hdr;
	r = np_parse(data, size, &hdr);
	CHECK(r > 0 || is_parse_error(r));
	CHECK(strcmp(np_errname(r > 0 ? NP_EAGAIN : r), "NP_UNKNOWN") != 0);
	CHECK(strcmp(np_strerror(r > 0 ? NP_EAGAIN : r), "unknown error") != 0);
	if (r <= 0)
		CHECK(memcmp(&hdr, &untouched, sizeof(hdr)) == 0);
	if (size == 0)
		CHECK(r == NP_EAGAIN);

	/*
	 * Shorter prefixes, each from a buffer of exactly its size: below a
	 * header's length (or of bytes still incomplete) NP_EAGAIN; below
	 * rejected bytes NP_EAGAIN or the very same error, never a header: the
	 * code must not depend on how the bytes were segmented.
	 */
	size_t limit = r > 0 ? (size_t)r : size;
	size_t prefixes[8] = {0, 1, limit / 2, limit > 0 ? limit - 1 : 0, 12, 15, 16,
			      size ? data[size - 1] : 0};
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		size_t plen = prefixes[i];
		if (plen >= limit)
			continue;
		int pr = parse_exact(data, plen, 0, &again);
		if (r > 0 || r == NP_EAGAIN)
			CHECK(pr == NP_EAGAIN);
		else
			CHECK(pr == NP_EAGAIN || pr == r);
	}

	/* Caps: from the input's bytes, and around the header's own length. */
	if (size) {
		check_parse_max(data, size, r, (size_t)data[0] * 3);
		check_parse_max(data, size, r, (size_t)data[size - 1] + 1);
		check_parse_max(data, size, r, 8);
		check_parse_max(data, size, r, 107);
		check_parse_max(data, size, r, NP_V2_MAX_LEN);
		if (r > 0) {
			check_parse_max(data, size, r, (size_t)r);
			check_parse_max(data, size, r, (size_t)r - 1);
		}
	}

	/* A v1 line against an independent reading of the grammar, both ways. */
	check_v1_oracle(data, size, r, &hdr);

	if (r <= 0)
		return 0;

	size_t n = (size_t)r;
	CHECK(n <= size);
	CHECK(n >= 15);
	check_fields(&hdr, data, n);

	/* The header alone parses the same, from a buffer of exactly its size. */
	uint8_t *copy = malloc(n);
	CHECK(copy != NULL);
	memcpy(copy, data, n);
	memset(&again, 0x5A, sizeof(again));
	CHECK(np_parse(copy, n, &again) == r);
	check_same_header(&hdr, data, &again, copy);
	if (hdr.version == 2 && hdr.tlv)
		check_tlvs(&again, copy, n, size > n ? data[n] : 0x7F);
	free(copy);

	check_endpoint(&hdr, &hdr.src);
	check_endpoint(&hdr, &hdr.dst);
	check_from_sockaddr(&hdr);

	/* Formatting a family the header does not have is refused, not guessed. */
	char text[NP_UNIX_PATH_LEN + 1];
	CHECK(np_format_addr(text, sizeof(text), NP_AF_UNSPEC, &hdr.src) == NP_EINVAL);
	CHECK(np_format_addr(text, sizeof(text), 4, &hdr.src) == NP_EINVAL);
	return 0;
}
