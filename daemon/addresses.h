/*
 * addresses.h - socket addresses as the daemon keeps them and writes them
 * in its log lines.
 */
#ifndef NPD_ADDRESSES_H
#define NPD_ADDRESSES_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

#include "netproxy.h"

union npd_sockaddr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/* Room for any text npd_sockaddr_text() writes. */
#define NPD_SOCKADDR_TEXT (NP_SOCKADDRSTRLEN + 8)

/*
 * a as text into out[0..cap), for the log: "203.0.113.7:51234",
 * "[2001:db8::1]:443", "[::ffff:203.0.113.7]:51234" for a v4-mapped one,
 * "unix" for any UNIX socket, "-" for AF_UNSPEC (an address not known).
 * Returns out. (The deprecated IPv4-compatible form, ::a.b.c.d with 96 zero
 * bits, is written in hex groups as RFC 5952 says; inet_ntop() wrote it
 * dotted. No peer or client of ours has one.)
 */
const char *npd_sockaddr_text(const union npd_sockaddr *a, char *out, size_t cap);

#endif /* NPD_ADDRESSES_H */
