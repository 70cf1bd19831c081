/*
 * fuzz_tlv.c - the TLV layer on its own: the input is a TLV area (no header).
 *
 *   - np_tlv_next() walks it until 0 or NP_ETLV; every TLV lies inside the
 *     area, each starts where the last ended, and they tile the area exactly
 *     when the walk ends with 0; NP_ETLV exactly when the rest is malformed;
 *   - np_tlv_find() (through a header pointing at the area) and np_ssl_find()
 *     give the first match of a plain walk;
 *   - np_ssl_decode() accepts exactly the SSL TLVs of 5 bytes or more whose
 *     sub-TLVs tile the rest, on every TLV found and on every value read as
 *     an SSL value; the vendor helpers accept exactly their layouts;
 *   - np__tlv_validate() says what an independent reading of spec 2.2 says;
 *   - np_crc32c(): the table and SSE4.2 versions agree, also when chained.
 *
 * Built with libFuzzer (make fuzz) and with fuzz/replay.c (make replay).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "check.h"
#include "netproxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);



/* Walk area[0..len) checking placement; returns the final np_tlv_next() result. */
static int walk(const uint8_t *area, size_t len, size_t *count)
{
	struct np_tlv_iter it;
	struct np_tlv t;
	const uint8_t *at = area;
	int r;

	*count = 0;
	np_tlv_iter_init(&it, area, len);
	if (len == 0) {
		/* An empty list (an SSL TLV without sub-TLVs has sub == NULL). */
		CHECK(np_tlv_next(&it, &t) == 0);
		return 0;
	}
	while ((r = np_tlv_next(&it, &t)) == 1) {
		CHECK(t.type == at[0]);
		CHECK(t.len == np__load16(at + 1));
		CHECK(t.value == at + 3);
		CHECK(t.value + t.len <= area + len);
		at = t.value + t.len;
		CHECK(it.pos == at);
		CHECK(it.left == (size_t)(area + len - at));
		++*count;
	}
	if (r == 0) {
		CHECK(at == area + len);
	} else {
		CHECK(r == NP_ETLV);
		/* Malformed: fewer than 3 bytes left, or a length running past the end. */
		size_t left = (size_t)(area + len - at);
		CHECK(left > 0);
		CHECK(left < 3 || np__load16(at + 1) > left - 3);
		/* The iterator stays put: asking again gives the same answer. */
		CHECK(np_tlv_next(&it, &t) == NP_ETLV);
	}
	CHECK(r == (tiles(area, len) ? 0 : NP_ETLV));
	return r;
}



/* np_ssl_decode() of t: accepted exactly when it is a well-formed SSL TLV. */
static void check_ssl(const struct np_tlv *t)
{
	struct np_ssl ssl;
	struct np_tlv sub, want;
	size_t count;
	int ok = t->type == NP_TLV_SSL && t->len >= 5 && tiles(t->value + 5, t->len - 5u);
	int r;

	memset(&ssl, 0xA5, sizeof(ssl));
	r = np_ssl_decode(t, &ssl);
	if (!ok) {
		CHECK(r == NP_ETLVVALUE);
		return;
	}
	CHECK(r == 0);
	CHECK(ssl.client == t->value[0]);
	CHECK(ssl.verify == np__load32(t->value + 1));
	CHECK(ssl.sub_len == t->len - 5u);
	if (ssl.sub_len)
		CHECK(ssl.sub == t->value + 5);
	CHECK(walk(ssl.sub, ssl.sub_len, &count) == 0);
	for (unsigned st = NP_SSL_VERSION - 1; st <= NP_SSL_CLIENT_CERT + 1; st++) {
		int got = np_ssl_find(&ssl, (uint8_t)st, &sub);
		int w = walk_find(ssl.sub, ssl.sub_len, (uint8_t)st, &want);
		check_find_result(got, &sub, w, &want);
	}
	int verified = ssl.verify == 0 &&
		       (ssl.client & (NP_SSL_CLIENT_CERT_CONN | NP_SSL_CLIENT_CERT_SESS)) != 0;
	CHECK(!np_ssl_verified(&ssl) == !verified);
}


/* What np__tlv_validate(area, len, area, len) must say (spec 2.2.1-2.2.5, SSL 2.2.5). */
static int predict_validate(const uint8_t *area, size_t len)
{
	static const uint8_t zero4[4];
	size_t off = 0;

	while (off < len) {
		if (len - off < 3)
			return NP_ETLV;
		uint8_t type = area[off];
		size_t l = (size_t)area[off + 1] << 8 | area[off + 2];
		if (l > len - off - 3)
			return NP_ETLV;
		const uint8_t *v = area + off + 3;
		switch (type) {
		case NP_TLV_CRC32C: {
			if (l != 4)
				return NP_ETLVVALUE;
			size_t before = (size_t)(v - area);
			uint32_t sum = np__crc32c_sw(0, area, before);
			sum = np__crc32c_sw(sum, zero4, 4);
			sum = np__crc32c_sw(sum, v + 4, len - before - 4);
			if (sum != np__load32(v))
				return NP_ECRC;
			break;
		}
		case NP_TLV_UNIQUE_ID:
			if (l > NP_UNIQUE_ID_MAX)
				return NP_ETLVVALUE;
			break;
		case NP_TLV_SSL:
			if (l < 5 || !tiles(v + 5, l - 5))
				return NP_ETLVVALUE;
			break;
		}
		off += 3 + l;
	}
	return 0;
}

static void check_crc(const uint8_t *data, size_t size)
{
	static const char check[] = "123456789";
	uint32_t sw = np__crc32c_sw(0, data, size);
	size_t split = size ? data[0] % (size + 1) : 0;

	CHECK(np__crc32c_sw(0, check, 9) == 0xE3069283u);
	CHECK(np_crc32c(0, data, size) == sw);
	/* Chaining over a split gives the sum of the whole. */
	CHECK(np__crc32c_sw(np__crc32c_sw(0, data, split), data + split, size - split) == sw);
	CHECK(np_crc32c(np_crc32c(0, data, split), data + split, size - split) == sw);
	/* A nonzero starting value, as when a caller continues a running sum. */
	uint32_t seed = size >= 4 ? np__load32(data) : 0x12345678u;
	if (np__crc32c_hw_available()) {
		CHECK(np__crc32c_hw(0, check, 9) == 0xE3069283u);
		CHECK(np__crc32c_hw(0, data, size) == sw);
		CHECK(np__crc32c_hw(np__crc32c_hw(0, data, split), data + split, size - split) == sw);
		CHECK(np__crc32c_hw(seed, data, size) == np__crc32c_sw(seed, data, size));
		/* Every alignment of the 8-byte loop. */
		for (size_t k = 1; k < 8 && k <= size; k++)
			CHECK(np__crc32c_hw(seed, data + k, size - k) ==
			      np__crc32c_sw(seed, data + k, size - k));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t types[] = {NP_TLV_ALPN, NP_TLV_AUTHORITY, NP_TLV_CRC32C, NP_TLV_NOOP,
					NP_TLV_UNIQUE_ID, NP_TLV_SSL, NP_TLV_NETNS, NP_TLV_GCP,
					NP_TLV_AWS, NP_TLV_AZURE, 0x00, 0xFF};
	struct np_tlv_iter it;
	struct np_tlv t, got, want;
	size_t count;
	int r;

	r = walk(data, size, &count);

	/* Every TLV found: SSL decoding (as itself and its value read as SSL), vendor helpers. */
	np_tlv_iter_init(&it, data, size);
	while (np_tlv_next(&it, &t) == 1) {
		struct np_tlv as_ssl = {NP_TLV_SSL, t.len, t.value};
		check_ssl(&t);
		check_ssl(&as_ssl);
		check_vendor(&t);
	}

	/* np_tlv_find() through a header whose TLV area is the input. */
	struct np_header hdr;
	memset(&hdr, 0, sizeof(hdr));
	hdr.version = 2;
	hdr.tlv = data;
	hdr.tlv_len = size;
	for (size_t i = 0; i <= sizeof(types) + 1; i++) {
		uint8_t type = i < sizeof(types) ? types[i] : size ? data[(i - sizeof(types)) * (size - 1)] : 0;
		int g = np_tlv_find(&hdr, type, &got);
		int w = walk_find(data, size, type, &want);
		check_find_result(g, &got, w, &want);
		if (r == 0)
			CHECK(g == 0 || g == 1);
	}

	/* The whole input as a one-TLV SSL value (no header, no outer TLV). */
	if (size <= 0xFFFF) {
		struct np_tlv whole = {NP_TLV_SSL, (uint16_t)size, data};
		check_ssl(&whole);
	}

	/* The validator the parser uses, the input being header and TLV area at once. */
	CHECK(np__tlv_validate(data, size, data, size) == predict_validate(data, size));

	check_crc(data, size);
	return 0;
}
