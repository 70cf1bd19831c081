/*
 * wire.h - the protocol between netproxy-bench and its backend (serve).
 *
 * Each request begins with a 16-byte head:
 *
 *   0   'N' 'P' 'B' op
 *   4   body length, 32 bits big-endian: the bytes that follow the head
 *   8   response length, 32 bits big-endian
 *   12  flags: bit 0 = close the connection once the response is sent
 *   13  three bytes, zero
 *
 *   op 'R'  read the body, answer with response-length bytes of the pattern
 *   op 'E'  echo: answer with the body itself, byte for byte, as it arrives
 *   op 'U'  upload: read until the client's end of file, answer with the
 *           number of bytes read after the head (64 bits big-endian), close
 *   op 'D'  download: send the pattern until the client's end of file, close
 *
 * Byte i of a body, of a response and of a download is i mod 251, so either
 * side can check what it receives. Requests are answered one at a time, in
 * order: the backend reads the next request only once the previous answer
 * is written. Connections to a "-p" listener must start with a PROXY header
 * (parsed by np_parse()) before the first head.
 */
#ifndef NETPROXY_BENCH_WIRE_H
#define NETPROXY_BENCH_WIRE_H

#include <stdint.h>

#define HEAD_LEN 16u
#define FLAG_CLOSE 0x01
enum { OP_RESPOND = 'R', OP_ECHO = 'E', OP_UPLOAD = 'U', OP_DOWNLOAD = 'D' };

/*
 * The pattern, long enough that any one read or write of IO_BUF bytes
 * starting at any offset is a contiguous slice of it (wire.c checks).
 */
#define PATTERN_PERIOD 251u
#define PATTERN_SPAN (PATTERN_PERIOD * 1045u)
extern uint8_t pattern[PATTERN_SPAN + PATTERN_PERIOD];

/* Fill pattern[]; once, before any thread reads it. */
void pattern_init(void);

/* The head of a request: op, body and response lengths, flags. */
void write_head(uint8_t *p, int op, uint32_t body, uint32_t response, uint8_t flags);

/* The helpers below are on every request's path: inline, not a call away. */

static inline const uint8_t *pattern_at(uint64_t offset)
{
	return pattern + offset % PATTERN_PERIOD;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#endif
