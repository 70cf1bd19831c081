/*
 * common.h - what netproxy-send, netproxy-dump and netproxy-bench share:
 * usage errors, numeric ADDR:PORT, hex digits, monotonic time and the
 * descriptor limit. Small on purpose: anything about the PROXY protocol
 * itself belongs in libnetproxy, not here.
 *
 * Each tool defines tool_name, the name its messages start with.
 */
#ifndef NETPROXY_TOOLS_COMMON_H
#define NETPROXY_TOOLS_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

extern const char tool_name[];

/* sysexits(3)'s EX_USAGE, spelled out so as not to depend on <sysexits.h>. */
#define TOOL_EXIT_USAGE 64

#define NS_PER_S 1000000000LL

/*
 * Say what is wrong on standard error, as printf() would, after the tool's
 * name, and point at --help. A NULL format says nothing more (getopt_long()
 * has already). Returns TOOL_EXIT_USAGE.
 */
__attribute__((format(printf, 1, 2))) int usage_error(const char *format, ...);

/*
 * A numeric address into *ss with the given port: IPv4, or IPv6 with or
 * without brackets (an IPv4 address in brackets is refused). s[0..n) need
 * not end in a NUL. 0, or -1 when it is not one.
 */
int parse_address(const char *s, size_t n, uint16_t port, struct sockaddr_storage *ss, socklen_t *len);

/* "ADDR:PORT", IPv6 as "[ADDR]:PORT", numeric only, port 0 to 65535: 0 or -1. */
int parse_host_port(const char *s, struct sockaddr_storage *ss, socklen_t *len);

/* The value of one hex digit, either case, or -1. */
int hex_digit(int c);

enum { HEX_OK = 0, HEX_BAD = -1, HEX_ODD = -2, HEX_LONG = -3 };

/*
 * Decode pairs of hex digits into out[0..cap); with spaces, whitespace may
 * separate (not split) pairs. Returns HEX_OK with *len set; HEX_BAD with
 * *bad at the character that is not a digit; HEX_ODD for a digit left
 * without its pair; HEX_LONG when more than cap bytes are spelled.
 */
int decode_hex(const char *s, bool spaces, uint8_t *out, size_t cap, size_t *len, const char **bad);

/* What a decode_hex() failure means, for a message. */
const char *hex_problem(int r);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t now_ns(void);

/*
 * Raise the soft limit on descriptors to the hard one and check that need
 * of them fit; why names what asks for them ("-c"). 0, or -1 after saying
 * what to do.
 */
int raise_fd_limit(uint64_t need, const char *why);

#endif
