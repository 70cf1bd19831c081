/*
 * test_crc32c.c - CRC-32C (Castagnoli) as PP2_TYPE_CRC32C uses it (2.2.3):
 * known answers, incremental use, the table and SSE4.2 versions against each
 * other, and a checksummed header that no single flipped bit gets through.
 */
#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "netproxy.h"
#include "tap.h"
#include "reference.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* xorshift64*: fixed seed, the same buffers every run. */
static uint64_t rng_state = 0x0123456789ABCDEFull;

static uint64_t rnd(void)
{
	return xorshift64star(&rng_state);
}

/*
 * Check values from RFC 3720 B.4 (iSCSI uses the same CRC-32C) and the
 * catalogue of CRC parameters ("123456789").
 */
static void test_known_answers(void)
{
	uint8_t zeros[32], ones[32], up[32];

	memset(zeros, 0, sizeof(zeros));
	memset(ones, 0xFF, sizeof(ones));
	for (int i = 0; i < 32; i++)
		up[i] = (uint8_t)i;

	const struct {
		const char *name;
		const void *data;
		size_t len;
		uint32_t crc;
	} cases[] = {
		{"\"123456789\"", "123456789", 9, 0xE3069283u},
		{"32 zero bytes", zeros, 32, 0x8A9136AAu},
		{"32 0xFF bytes", ones, 32, 0x62A8AB43u},
		{"32 ascending bytes", up, 32, 0x46DD794Eu},
		{"the empty input", "", 0, 0},
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		uint32_t got = np_crc32c(0, cases[i].data, cases[i].len);

		ok(got == cases[i].crc, "np_crc32c %s = 0x%08X", cases[i].name, cases[i].crc);
		if (got != cases[i].crc)
			diag("  got 0x%08X", got);
		ok(np__crc32c_sw(0, cases[i].data, cases[i].len) == cases[i].crc, "table version, %s", cases[i].name);
		if (np__crc32c_hw_available())
			ok(np__crc32c_hw(0, cases[i].data, cases[i].len) == cases[i].crc, "SSE4.2 version, %s",
			   cases[i].name);
		else
			skip("SSE4.2 version, %s: this CPU has no SSE4.2", cases[i].name);
	}
	/* An empty continuation changes nothing. */
	ok(np_crc32c(0xE3069283u, "", 0) == 0xE3069283u, "np_crc32c of nothing keeps the running value");
	ok(np_crc32c(0x12345678u, NULL, 0) == 0x12345678u, "np_crc32c of NULL, 0 keeps the running value");
}

/* A running value continued over any split gives the one-shot answer. */
static void test_incremental(void)
{
	static uint8_t buf[300];
	int bad = 0;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)rnd();
	uint32_t whole = np_crc32c(0, buf, sizeof(buf));
	for (size_t at = 0; at <= sizeof(buf); at++) {
		uint32_t c = np_crc32c(0, buf, at);
		c = np_crc32c(c, buf + at, sizeof(buf) - at);
		if (c != whole)
			bad++;
	}
	ok(bad == 0, "split at every point of 300 bytes: equals one-shot");

	/* Byte by byte, and in three uneven pieces. */
	uint32_t c = 0;
	for (size_t i = 0; i < sizeof(buf); i++)
		c = np_crc32c(c, buf + i, 1);
	ok(c == whole, "one byte at a time: equals one-shot");
	c = np_crc32c(np_crc32c(np_crc32c(0, buf, 7), buf + 7, 150), buf + 157, sizeof(buf) - 157);
	ok(c == whole, "three pieces: equals one-shot");

	const char *s = "123456789";
	bad = 0;
	for (size_t at = 0; at <= 9; at++)
		if (np_crc32c(np_crc32c(0, s, at), s + at, 9 - at) != 0xE3069283u)
			bad++;
	ok(bad == 0, "\"123456789\" split anywhere: 0xE3069283");
}

/*
 * The SSE4.2 loop takes 8 bytes at a time through memcpy: every length
 * around those steps, at every alignment, must agree with the table.
 */
static void test_sw_hw_agree(void)
{
	static uint8_t buf[300 + 8];
	long bad = 0, bad_split = 0;

	if (!np__crc32c_hw_available()) {
		skip("table vs SSE4.2: this CPU has no SSE4.2, np_crc32c uses the table");
		skip("table vs SSE4.2 with a running value: no SSE4.2");
		skip("np_crc32c vs table: no SSE4.2");
		return;
	}
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)rnd();
	for (size_t align = 0; align < 8; align++) {
		for (size_t len = 0; len <= 300; len++) {
			const uint8_t *p = buf + align;
			uint32_t seed = (uint32_t)rnd();

			if (np__crc32c_sw(0, p, len) != np__crc32c_hw(0, p, len))
				bad++;
			/* With a nonzero running value too: the inversions must line up. */
			if (np__crc32c_sw(seed, p, len) != np__crc32c_hw(seed, p, len))
				bad_split++;
		}
	}
	ok(bad == 0, "table and SSE4.2 agree: lengths 0..300 at alignments 0..7");
	if (bad)
		diag("  %ld disagreements", bad);
	ok(bad_split == 0, "table and SSE4.2 agree when continuing a running value");
	ok(np_crc32c(0, buf, 300) == np__crc32c_sw(0, buf, 300), "np_crc32c equals the table version");
}

/* A header built with NP_BUILD_CRC32C: valid, and no single flipped bit passes. */
static void test_header_bit_flips(void)
{
	static uint8_t hdr[512];
	const struct np_tlv tlvs[] = {
		{NP_TLV_ALPN, 2, (const uint8_t *)"h2"},
		{NP_TLV_AUTHORITY, 11, (const uint8_t *)"example.com"},
		{NP_TLV_UNIQUE_ID, 5, (const uint8_t *)"\x00\x01\x02\x03\x04"},
		{NP_TLV_NOOP, 4, (const uint8_t *)"\0\0\0\0"},
	};
	struct np_header h, p;

	memset(&h, 0, sizeof(h));
	h.version = 2;
	h.command = NP_CMD_PROXY;
	h.family = NP_AF_INET6;
	h.transport = NP_TRANSPORT_STREAM;
	for (int i = 0; i < 16; i++) {
		h.src.ip6[i] = (uint8_t)(0x20 + i);
		h.dst.ip6[i] = (uint8_t)(0x40 + i);
	}
	h.src.port = 40000;
	h.dst.port = 443;

	int n = np_build_v2(hdr, sizeof(hdr), &h, tlvs, ARRAY_LEN(tlvs), NP_BUILD_CRC32C);
	ok(n > 0, "a header with CRC32C is built (%d bytes)", n);
	if (n <= 0)
		return;
	is_int(np_parse(hdr, (size_t)n, &p), n, "it verifies");

	/*
	 * The sum cannot protect its own TLV's type byte: a flip there turns
	 * the CRC32C TLV into another 4-byte TLV, and what is left is a valid
	 * header without a checksum. Such a header must then say so (no
	 * CRC32C TLV found); every other flip must fail.
	 */
	struct np_tlv c;
	if (!ok(np_tlv_find(&p, NP_TLV_CRC32C, &c) == 1, "the built header has a CRC32C TLV"))
		return;
	int type_at = (int)(c.value - hdr) - 3;
	is_int(hdr[type_at], NP_TLV_CRC32C, "the CRC32C TLV's type byte is at offset %d", type_at);

	int accepted = 0, crc_errors = 0, retyped = 0;
	for (int byte = 0; byte < n; byte++) {
		for (int bit = 0; bit < 8; bit++) {
			hdr[byte] ^= (uint8_t)(1u << bit);
			/* The original length is given: a flip in len may ask for more (NP_EAGAIN), never pass. */
			int r = np_parse(hdr, (size_t)n, &p);
			if (byte == type_at) {
				if (r == n && np_tlv_find(&p, NP_TLV_CRC32C, &c) == 0)
					retyped++;
			} else if (r > 0) {
				if (accepted++ < 5)
					diag("  byte %d bit %d flipped: accepted", byte, bit);
			}
			if (r == NP_ECRC)
				crc_errors++;
			hdr[byte] ^= (uint8_t)(1u << bit);
		}
	}
	ok(accepted == 0, "none of the %d single-bit flips outside the CRC32C type byte is accepted", (n - 1) * 8);
	is_int(retyped, 8, "the 8 flips of the type byte leave a header that visibly has no CRC32C");
	/* Most flips land in addresses, ports and TLV values, which only the sum protects. */
	ok(crc_errors > n * 8 / 2, "most flips are caught as NP_ECRC (%d of %d)", crc_errors, n * 8);
	is_int(np_parse(hdr, (size_t)n, &p), n, "the header is intact again");

	/* Also with application data after it: the sum covers the header only (C30). */
	memcpy(hdr + n, "GET / HTTP/1.1\r\n", 16);
	is_int(np_parse(hdr, (size_t)n + 16, &p), n, "application data after it is not summed");
}

int main(void)
{
	test_known_answers();
	test_incremental();
	test_sw_hw_agree();
	test_header_bit_flips();
	return done_testing();
}
