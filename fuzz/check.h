/*
 * check.h - what the fuzz targets share: the CHECK assertion, and readings
 * of the TLV layout that do not use the library, to hold its answers to.
 */
#ifndef NP_FUZZ_CHECK_H
#define NP_FUZZ_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "netproxy.h"

/* An assertion that holds in every build (NDEBUG or not): libFuzzer reports the abort. */
#define CHECK(cond)                                                                        \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,  \
				#cond);                                                    \
			abort();                                                           \
		}                                                                          \
	} while (0)

/* Sub-TLVs tile v[0..len) exactly: an independent reading of the layout. */
static inline int tiles(const uint8_t *v, size_t len)
{
	size_t off = 0;

	while (off < len) {
		if (len - off < 3)
			return 0;
		size_t l = (size_t)v[off + 1] << 8 | v[off + 2];
		if (l > len - off - 3)
			return 0;
		off += 3 + l;
	}
	return 1;
}

static inline int walk_find(const uint8_t *area, size_t len, uint8_t type, struct np_tlv *out)
{
	struct np_tlv_iter it;
	struct np_tlv t;
	int r;

	np_tlv_iter_init(&it, area, len);
	while ((r = np_tlv_next(&it, &t)) == 1) {
		if (t.type == type) {
			*out = t;
			return 1;
		}
	}
	return r;
}

static inline void check_find_result(int got, const struct np_tlv *gt, int want, const struct np_tlv *wt)
{
	CHECK(got == want);
	if (got == 1) {
		CHECK(gt->type == wt->type);
		CHECK(gt->len == wt->len);
		CHECK(gt->value == wt->value);
	}
}

static inline void check_vendor(const struct np_tlv *t)
{
	const uint8_t *id = NULL;
	size_t id_len = 0;
	uint32_t link = 0;
	uint64_t psc = 0;
	int r;

	r = np_tlv_aws_vpce_id(t, &id, &id_len);
	if (t->type == NP_TLV_AWS && t->len >= 2 && t->value[0] == 0x01) {
		CHECK(r == 0);
		CHECK(id == t->value + 1);
		CHECK(id_len == t->len - 1u);
	} else {
		CHECK(r == NP_ETLVVALUE);
	}

	r = np_tlv_azure_link_id(t, &link);
	if (t->type == NP_TLV_AZURE && t->len == 5 && t->value[0] == 0x01) {
		CHECK(r == 0);
		CHECK(link == ((uint32_t)t->value[1] | (uint32_t)t->value[2] << 8 |
			       (uint32_t)t->value[3] << 16 | (uint32_t)t->value[4] << 24));
	} else {
		CHECK(r == NP_ETLVVALUE);
	}

	r = np_tlv_gcp_psc_id(t, &psc);
	if (t->type == NP_TLV_GCP && t->len == 8) {
		uint64_t want = 0;
		for (int i = 0; i < 8; i++)
			want = want << 8 | t->value[i];
		CHECK(r == 0);
		CHECK(psc == want);
	} else {
		CHECK(r == NP_ETLVVALUE);
	}
}

#endif /* NP_FUZZ_CHECK_H */
