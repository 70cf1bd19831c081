/*
 * internal.h - what the library's files share and the public header does not
 * say. Nothing here is exported from the shared library; unit tests that link
 * the static library may use it.
 */
#ifndef NP_INTERNAL_H
#define NP_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "netproxy.h"

#define NP_V2_SIG_LEN 12
extern const uint8_t np__v2_sig[NP_V2_SIG_LEN];

static inline uint16_t np__load16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t np__load32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void np__store16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void np__store32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* The format parsers behind np_parse_max(); p[0] already selects the version. */
int np__parse_v1(const uint8_t *p, size_t len, size_t max_len, struct np_header *hdr);
int np__parse_v2(const uint8_t *p, size_t len, size_t max_len, struct np_header *hdr);

/*
 * Check a v2 header's TLV area tlv[0..len) in place; hdr_start..hdr_len is the
 * whole header, needed to verify a CRC32C. Returns 0 or NP_ETLV, NP_ETLVVALUE,
 * NP_ECRC.
 */
int np__tlv_validate(const uint8_t *hdr_start, size_t hdr_len, const uint8_t *tlv, size_t len);

/* The two CRC32C implementations np_crc32c() chooses between; tests compare them. */
uint32_t np__crc32c_sw(uint32_t crc, const void *data, size_t len);
int np__crc32c_hw_available(void);
uint32_t np__crc32c_hw(uint32_t crc, const void *data, size_t len);

/* Address text shared by the v1 builder and np_format_addr(); out has room for NP_ADDRSTRLEN. */
size_t np__format_ip4(char *out, const uint8_t ip[4]);
size_t np__format_ip6(char *out, const uint8_t ip[16]);
/* Decimal digits of v (at most 5 for a port), no NUL. */
size_t np__format_u16(char *out, uint16_t v);
/*
 * The v1 address grammar (v1.c): the address at p, which must be followed by
 * a byte that cannot continue it (a NUL will do). Returns the byte after it,
 * or NULL.
 */
const uint8_t *np__scan_ip4(const uint8_t *p, uint8_t out[4]);
const uint8_t *np__scan_ip6(const uint8_t *p, uint8_t out[16]);

#endif /* NP_INTERNAL_H */
