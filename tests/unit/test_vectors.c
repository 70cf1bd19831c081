/*
 * test_vectors.c - every vector of tests/data/vectors-peers.json through
 * np_parse(), and every fact the vector states compared with what the
 * library reports: outcome, header fields, address bytes, ports, address
 * text, TLVs in wire order, the decoded SSL TLV, vendor TLVs, the CRC32C.
 * The table comes from tests/gen_vectors.py (build/gen/vectors.h).
 *
 * One test point per vector per aspect, named "<vector>: <aspect>". An aspect
 * collects all of its mismatches and prints them in one diag, so a failure
 * says every field that is wrong, not just the first.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "netproxy.h"
#include "tap.h"
#include "vectors.h"

/* What tests/data/vectors-README.md announces; a short table means a broken generator. */
#define README_TOTAL 172
#define README_OK 60
#define README_ERROR 86
#define README_INCOMPLETE 26

/* Mismatches of the aspect being checked, "; "-separated. */
static char why[2048];
static size_t why_len;

static void why_reset(void)
{
	why[0] = '\0';
	why_len = 0;
}

__attribute__((format(printf, 1, 2))) static void mismatch(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (why_len + 3 >= sizeof(why))
		return;
	if (why_len) {
		memcpy(why + why_len, "; ", 3);
		why_len += 2;
	}
	va_start(ap, fmt);
	n = vsnprintf(why + why_len, sizeof(why) - why_len, fmt, ap);
	va_end(ap);
	if (n > 0)
		why_len += (size_t)n < sizeof(why) - why_len ? (size_t)n : sizeof(why) - why_len - 1;
}

static void expect_int(long long got, long long want, const char *what)
{
	if (got != want)
		mismatch("%s: got %lld, want %lld", what, got, want);
}

static void expect_bytes(const uint8_t *got, const uint8_t *want, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++) {
		if (got[i] != want[i]) {
			mismatch("%s: byte %zu is 0x%02x, want 0x%02x", what, i, got[i], want[i]);
			return;
		}
	}
}

/* One test point for the aspect just checked. */
static void report(const struct vec *v, const char *aspect)
{
	if (!ok(why_len == 0, "%s: %s", v->name, aspect))
		diag("  %s", why);
	why_reset();
}

static const char *code_name(int r)
{
	return r > 0 ? "a header length" : np_errname(r);
}

/*
 * CRC32C bit by bit, written from the definition (reflected 0x82F63B78,
 * init and final XOR all ones), so the vectors' "valid" is judged without
 * the library's table or its SSE4.2 path.
 */
static uint32_t crc32c_ref(const uint8_t *p, size_t len)
{
	uint32_t c = 0xFFFFFFFFu;

	while (len--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? c >> 1 ^ 0x82F63B78u : c >> 1;
	}
	return ~c;
}

static uint32_t load_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void check_counts(void)
{
	size_t n[3] = {0, 0, 0};

	for (size_t i = 0; i < VEC_COUNT; i++)
		n[vectors[i].expect + 1]++;
	is_int(VEC_COUNT, README_TOTAL, "table holds the README's %d vectors", README_TOTAL);
	is_int(n[2], README_OK, "%d ok vectors", README_OK);
	is_int(n[1], README_ERROR, "%d error vectors", README_ERROR);
	is_int(n[0], README_INCOMPLETE, "%d incomplete vectors", README_INCOMPLETE);
}

/*
 * The outcome. For anything but ok, *hdr must stay untouched: the header
 * promises it is written only for a positive result.
 */
static int check_outcome(const struct vec *v, struct np_header *hdr)
{
	struct np_header before;
	int r;

	memset(hdr, 0xA5, sizeof(*hdr));
	memcpy(&before, hdr, sizeof(before));
	r = np_parse(v->bytes, v->len, hdr);
	switch (v->expect) {
	case 1:
		if (r != (int)v->header_len)
			mismatch("got %d (%s), want header_len %zu", r, code_name(r), v->header_len);
		break;
	case 0:
		if (r >= 0 || r == NP_EAGAIN)
			mismatch("got %d (%s), want an error other than NP_EAGAIN", r, code_name(r));
		break;
	default:
		if (r != NP_EAGAIN)
			mismatch("got %d (%s), want NP_EAGAIN", r, code_name(r));
		break;
	}
	if (r <= 0 && memcmp(hdr, &before, sizeof(before)) != 0)
		mismatch("*hdr was written although the result is %s", code_name(r));
	if (why_len && v->impl_defined)
		mismatch("(the vector marks this outcome implementation-defined: checklist E)");
	report(v, v->expect == 1 ? "parses" : v->expect == 0 ? "is rejected" : "is incomplete");
	return r;
}

static void check_fields(const struct vec *v, const struct np_header *h)
{
	expect_int(h->version, v->version, "version");
	expect_int(h->command, v->command, "command");
	expect_int(h->family, v->family, "family");
	expect_int(h->transport, v->transport, "transport");
	expect_int(h->v1_proto, v->v1_proto, "v1_proto");
	expect_int(np_has_addresses(h) != 0, v->has_addr, "np_has_addresses");
	report(v, "header fields");
}

static void check_endpoint(const struct vec *v, const struct np_endpoint *ep, const uint8_t *want,
			   int want_port, const char *end)
{
	char what[32];

	/* ip4, ip6 and path all start at the union's first byte. */
	snprintf(what, sizeof(what), "%s address", end);
	expect_bytes(ep->path, want, v->addr_len, what);
	snprintf(what, sizeof(what), "%s port", end);
	if (want_port >= 0)
		expect_int(ep->port, want_port, what);
	else if (v->family == NP_AF_UNIX)
		expect_int(ep->port, 0, what); /* netproxy.h: "0 for NP_AF_UNIX" */
	else
		mismatch("%s: vector has a %s address but no port", what, end);
}

static void check_addresses(const struct vec *v, const struct np_header *h)
{
	check_endpoint(v, &h->src, v->src_hex, v->src_port, "src");
	check_endpoint(v, &h->dst, v->dst_hex, v->dst_port, "dst");
	report(v, "addresses and ports");
}

static void check_text(const struct np_header *h, const struct np_endpoint *ep,
		       const uint8_t *want, size_t want_len, const char *end)
{
	char out[NP_UNIX_PATH_LEN + 2];
	int r;

	if (!want) {
		mismatch("%s: vector has address bytes but no text", end);
		return;
	}
	memset(out, 'X', sizeof(out));
	r = np_format_addr(out, want_len + 1, h->family, ep);
	if (r != (int)want_len) {
		mismatch("%s text: got %d (%s), want length %zu", end, r, code_name(r), want_len);
		return;
	}
	if (memcmp(out, want, want_len) != 0 || out[want_len] != '\0')
		mismatch("%s text: got \"%.*s\", want \"%.*s\"", end, (int)want_len, out, (int)want_len,
			 (const char *)want);
	if (out[want_len + 1] != 'X')
		mismatch("%s text: wrote past the NUL", end);
	/* One byte short of the NUL: the documented refusal, not a cut string. */
	r = np_format_addr(out, want_len, h->family, ep);
	if (r != NP_ENOSPC)
		mismatch("%s text into cap %zu: got %d (%s), want NP_ENOSPC", end, want_len, r,
			 code_name(r));
}

static void check_addr_text(const struct vec *v, const struct np_header *h)
{
	check_text(h, &h->src, v->src_text, v->src_text_len, "src");
	check_text(h, &h->dst, v->dst_text, v->dst_text_len, "dst");
	report(v, "address text");
}

/* Compare a TLV list area[0..len) with the vector's list, in wire order. */
static void compare_list(const uint8_t *area, size_t len, const struct vec_tlv *want, size_t nwant,
			 const char *what)
{
	struct np_tlv_iter it;
	struct np_tlv t;
	size_t n = 0;
	int r;

	np_tlv_iter_init(&it, area, len);
	while ((r = np_tlv_next(&it, &t)) == 1) {
		if (n < nwant) {
			const struct vec_tlv *w = &want[n];
			char label[48];

			snprintf(label, sizeof(label), "%s %zu value", what, n);
			if (t.type != w->type)
				mismatch("%s %zu: type 0x%02x, want 0x%02x", what, n, t.type, w->type);
			else if (t.len != w->len)
				mismatch("%s %zu: length %u, want %zu", what, n, t.len, w->len);
			else
				expect_bytes(t.value, w->value, w->len, label);
		}
		n++;
	}
	if (r != 0)
		mismatch("%s: np_tlv_next ended with %d (%s)", what, r, code_name(r));
	else if (np_tlv_next(&it, &t) != 0)
		mismatch("%s: np_tlv_next does not stay at the end", what);
	if (n != nwant)
		mismatch("%s: %zu entries, want %zu", what, n, nwant);
}

static void check_tlvs(const struct vec *v, const struct np_header *h)
{
	struct np_tlv t;
	struct np_ssl ssl;

	compare_list(h->tlv, h->tlv_len, v->tlvs, v->ntlv, "TLV");

	/* The area is the tail of the header, inside the caller's buffer. */
	if (h->tlv_len > 0 && (h->tlv < v->bytes || h->tlv + h->tlv_len != v->bytes + v->header_len))
		mismatch("tlv does not end at header_len inside the buffer");

	/* np_tlv_find() gives the first entry of each type. */
	for (size_t i = 0; i < v->ntlv; i++) {
		size_t j = 0;
		int r;

		while (j < i && v->tlvs[j].type != v->tlvs[i].type)
			j++;
		if (j < i)
			continue; /* a later duplicate: the first was checked */
		r = np_tlv_find(h, v->tlvs[i].type, &t);
		if (r != 1)
			mismatch("np_tlv_find(0x%02x): got %d, want 1", v->tlvs[i].type, r);
		else if (t.len != v->tlvs[i].len ||
			 memcmp(t.value, v->tlvs[i].value, v->tlvs[i].len) != 0)
			mismatch("np_tlv_find(0x%02x) did not give the first such TLV", v->tlvs[i].type);
	}

	/* Anything that is not an SSL TLV is refused by the SSL decoder. */
	for (size_t i = 0; i < v->ntlv; i++) {
		if (v->tlvs[i].type == NP_TLV_SSL)
			continue;
		t.type = v->tlvs[i].type;
		t.len = (uint16_t)v->tlvs[i].len;
		t.value = v->tlvs[i].value;
		int r = np_ssl_decode(&t, &ssl);
		if (r != NP_ETLVVALUE)
			mismatch("np_ssl_decode on type 0x%02x: got %d, want NP_ETLVVALUE", t.type, r);
	}
	report(v, "TLVs in wire order");
}

static int has_type(const struct vec *v, uint8_t type)
{
	for (size_t i = 0; i < v->ntlv; i++)
		if (v->tlvs[i].type == type)
			return 1;
	return 0;
}

static void check_ssl(const struct vec *v, const struct np_header *h)
{
	struct np_tlv_iter it;
	struct np_tlv t, sub;
	size_t idx = 0;

	np_tlv_iter_init(&it, h->tlv, h->tlv_len);
	for (size_t i = 0; i < v->ntlv && np_tlv_next(&it, &t) == 1; i++) {
		const struct vec_tlv *w = &v->tlvs[i];
		struct np_ssl ssl;
		int r;

		if (w->type != NP_TLV_SSL)
			continue;
		idx++;
		if (!w->has_ssl) {
			mismatch("SSL TLV %zu: the vector gives no decoded fields", i);
			continue;
		}
		if (t.type != NP_TLV_SSL) {
			mismatch("TLV %zu is not the SSL TLV", i);
			continue;
		}
		memset(&ssl, 0xA5, sizeof(ssl));
		if ((r = np_ssl_decode(&t, &ssl)) != 0) {
			mismatch("np_ssl_decode: got %d (%s)", r, code_name(r));
			continue;
		}
		expect_int(ssl.client, w->ssl_client, "client");
		expect_int(ssl.verify, w->ssl_verify, "verify");
		compare_list(ssl.sub, ssl.sub_len, w->ssl_sub, w->ssl_nsub, "sub-TLV");
		/* Verified means a certificate was presented and verify is 0 (checklist C25). */
		expect_int(np_ssl_verified(&ssl) != 0,
			   w->ssl_verify == 0 && (w->ssl_client & (NP_SSL_CLIENT_CERT_CONN |
								    NP_SSL_CLIENT_CERT_SESS)),
			   "np_ssl_verified");
		for (size_t j = 0; j < w->ssl_nsub; j++) {
			r = np_ssl_find(&ssl, w->ssl_sub[j].type, &sub);
			if (r != 1)
				mismatch("np_ssl_find(0x%02x): got %d, want 1", w->ssl_sub[j].type, r);
		}
		/* 0x29 is no sub-TLV the spec defines and none of the captures carry. */
		if ((r = np_ssl_find(&ssl, 0x29, &sub)) != 0)
			mismatch("np_ssl_find(0x29): got %d, want 0", r);
	}
	if (idx == 0)
		mismatch("no SSL TLV found while walking the list");
	report(v, "SSL TLV decoded");
}

/* The vendor layouts of checklist section F, decoded here by hand. */
static void check_vendor(const struct vec *v)
{
	for (size_t i = 0; i < v->ntlv; i++) {
		const struct vec_tlv *w = &v->tlvs[i];
		struct np_tlv t = {.type = w->type, .len = (uint16_t)w->len, .value = w->value};
		int r;

		if (w->type == NP_TLV_AWS) {
			const uint8_t *id = NULL;
			size_t len = 0;
			int valid = w->len >= 2 && w->value[0] == 0x01;

			r = np_tlv_aws_vpce_id(&t, &id, &len);
			expect_int(r, valid ? 0 : NP_ETLVVALUE, "np_tlv_aws_vpce_id");
			if (valid && r == 0 && (id != w->value + 1 || len != w->len - 1))
				mismatch("AWS VPCE id: wrong bytes");
			/* Every VPC endpoint id starts so (AWS NLB guide). */
			if (valid && r == 0 && (len < 5 || memcmp(id, "vpce-", 5) != 0))
				mismatch("AWS VPCE id does not start with \"vpce-\"");
		} else if (w->type == NP_TLV_GCP) {
			uint64_t id = 0, want = 0;
			int valid = w->len == 8;

			for (size_t k = 0; valid && k < 8; k++)
				want = want << 8 | w->value[k];
			r = np_tlv_gcp_psc_id(&t, &id);
			expect_int(r, valid ? 0 : NP_ETLVVALUE, "np_tlv_gcp_psc_id");
			if (valid && r == 0 && id != want)
				mismatch("GCP PSC id: got 0x%016llx, want 0x%016llx", (unsigned long long)id,
					 (unsigned long long)want);
		} else if (w->type == NP_TLV_AZURE) {
			uint32_t id = 0;
			int valid = w->len == 5 && w->value[0] == 0x01;

			r = np_tlv_azure_link_id(&t, &id);
			expect_int(r, valid ? 0 : NP_ETLVVALUE, "np_tlv_azure_link_id");
			if (valid && r == 0 &&
			    id != ((uint32_t)w->value[1] | (uint32_t)w->value[2] << 8 |
				   (uint32_t)w->value[3] << 16 | (uint32_t)w->value[4] << 24))
				mismatch("Azure link id: wrong value");
		}
	}
	report(v, "vendor TLVs");
}

static void check_crc(const struct vec *v, const struct np_header *h)
{
	struct np_tlv t;
	int r = np_tlv_find(h, NP_TLV_CRC32C, &t);

	expect_int(r, v->crc_present, "CRC32C TLV present");
	if (r == 1 && v->crc_present) {
		static uint8_t copy[NP_V2_MAX_LEN];
		size_t off = (size_t)(t.value - v->bytes);

		expect_int(t.len, 4, "CRC32C length");
		if (t.len == 4 && off + 4 <= v->header_len && v->header_len <= sizeof(copy)) {
			expect_int(load_be32(t.value), v->crc_stored, "stored CRC32C (big-endian)");
			/* The sum over the header with its own value zeroed (spec 2.2.3). */
			memcpy(copy, v->bytes, v->header_len);
			memset(copy + off, 0, 4);
			uint32_t ref = crc32c_ref(copy, v->header_len);
			expect_int(ref == v->crc_stored, v->crc_valid, "CRC32C valid");
			expect_int(np_crc32c(0, copy, v->header_len), ref, "np_crc32c over the header");
		} else {
			mismatch("CRC32C value not inside the header");
		}
	}
	report(v, "CRC32C");
}

/*
 * Two parses agree on every meaningful field. Not memcmp: bytes of the
 * address union beyond the family's size are unspecified.
 */
static int same_header(const struct np_header *a, const struct np_header *b)
{
	size_t n = a->family == NP_AF_INET ? 4 : a->family == NP_AF_INET6 ? 16 : NP_UNIX_PATH_LEN;

	if (a->version != b->version || a->command != b->command || a->family != b->family ||
	    a->transport != b->transport || a->v1_proto != b->v1_proto || a->tlv != b->tlv ||
	    a->tlv_len != b->tlv_len)
		return 0;
	if (!np_has_addresses(a))
		return 1;
	return memcmp(a->src.path, b->src.path, n) == 0 && memcmp(a->dst.path, b->dst.path, n) == 0 &&
	       a->src.port == b->src.port && a->dst.port == b->dst.port;
}

/* A cap equal to the header passes; one byte less is NP_ETOOBIG, for v1 (< 107) and v2. */
static void check_parse_max(const struct vec *v, const struct np_header *want)
{
	struct np_header h;
	int r;

	r = np_parse_max(v->bytes, v->len, v->header_len, &h);
	expect_int(r, (long long)v->header_len, "np_parse_max(max_len = header_len)");
	if (r > 0 && !same_header(&h, want))
		mismatch("np_parse_max gives another header than np_parse");
	report(v, "np_parse_max(header_len)");

	r = np_parse_max(v->bytes, v->len, v->header_len - 1, &h);
	if (r != NP_ETOOBIG)
		mismatch("got %d (%s), want NP_ETOOBIG", r, code_name(r));
	report(v, "np_parse_max(header_len - 1)");
}

int main(void)
{
	check_counts();
	why_reset();

	for (size_t i = 0; i < VEC_COUNT; i++) {
		const struct vec *v = &vectors[i];
		struct np_header h0;

		int r = check_outcome(v, &h0);
		if (v->expect != 1)
			continue;
		if (r != (int)v->header_len) {
			skip("%s: fields (did not parse)", v->name);
			continue;
		}
		check_fields(v, &h0);
		if (v->has_addr && np_has_addresses(&h0)) {
			check_addresses(v, &h0);
			check_addr_text(v, &h0);
		}
		check_tlvs(v, &h0);
		if (has_type(v, NP_TLV_SSL))
			check_ssl(v, &h0);
		if (has_type(v, NP_TLV_AWS) || has_type(v, NP_TLV_GCP) || has_type(v, NP_TLV_AZURE))
			check_vendor(v);
		check_crc(v, &h0);
		check_parse_max(v, &h0);
	}
	return done_testing();
}
