/*
 * backend.h - the socket a connection reaches its service with.
 *
 * In transparent delivery it carries the client's own address, bound with
 * IP_TRANSPARENT, so an unmodified server sees the client in getpeername(),
 * its logs and its ACLs. That needs CAP_NET_ADMIN, and policy routing that
 * brings the server's replies to the client's address back to this host
 * (routing.h).
 */
#ifndef NPD_BACKEND_H
#define NPD_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "addresses.h"

/*
 * Which of svc's addresses a connection goes to: the one of its client's
 * family (a v4-mapped IPv6 address is IPv4), else the first, the only one
 * for a client without an address (LOCAL, UNKNOWN, UNIX). The same rule in
 * every delivery mode, so a client reaches the socket it would have without
 * netproxyd, whether the service is transparent or not; only transparent
 * delivery fails without an address of the client's family
 * (npd_backend_socket()). Never NULL.
 */
const struct npd_target *npd_backend_target(const struct npd_service *svc,
					    const union npd_sockaddr *client);

/*
 * A non-blocking socket for to, one of svc's addresses, not yet connected.
 * With svc->transparent and a client address (AF_INET or AF_INET6), it is
 * bound to that address, and to its port when svc->transparent_port and the
 * port is free (else *port_moved is set and the kernel picks one). Returns
 * the fd, or -1 with the reason written to why: among them, a client whose
 * family is not to's.
 */
int npd_backend_socket(const struct npd_service *svc, const struct npd_target *to,
		       const union npd_sockaddr *client, bool *port_moved, char *why, size_t cap);

#endif /* NPD_BACKEND_H */
