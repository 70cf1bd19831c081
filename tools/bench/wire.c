/*
 * wire.c - the request head and the byte pattern of netproxy-bench's
 * protocol (wire.h), shared by the load generator and the backend.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bench.h"
#include "wire.h"

/*
 * The pattern, long enough that any one read or write of IO_BUF bytes
 * starting at any offset is a contiguous slice of it.
 */
_Static_assert(PATTERN_SPAN >= IO_BUF, "a read must fit in the pattern");
uint8_t pattern[PATTERN_SPAN + PATTERN_PERIOD];

void pattern_init(void)
{
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i % PATTERN_PERIOD);
}

void write_head(uint8_t *p, int op, uint32_t body, uint32_t response, uint8_t flags)
{
	memcpy(p, "NPB", 3);
	p[3] = (uint8_t)op;
	put_be32(p + 4, body);
	put_be32(p + 8, response);
	p[12] = flags;
	p[13] = p[14] = p[15] = 0;
}
