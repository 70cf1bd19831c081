/*
 * reference.h - what the library's tests check it against, written here
 * from the definitions and not taken from the library: the v2 signature,
 * CRC-32C bit by bit, big-endian stores and loads, and xorshift64*, a
 * generator a test seeds once so that every run tests the same inputs.
 *
 * Header-only, like tap.h: each test is one program from one .c file.
 */
#ifndef NP_REFERENCE_H
#define NP_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

/* The 12 bytes every v2 header starts with (spec 2.2). */
static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* CRC-32C bit by bit, straight from its definition (reflected 0x82F63B78). */
static inline uint32_t ref_crc32c(const uint8_t *p, size_t n)
{
	uint32_t c = 0xFFFFFFFFu;

	while (n--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
	}
	return ~c;
}

static inline void store16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void store32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t load32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* xorshift64*: the next number from *state, which must not be 0. */
static inline uint64_t xorshift64star(uint64_t *state)
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 0x2545F4914F6CDD1Dull;
}

#endif /* NP_REFERENCE_H */
