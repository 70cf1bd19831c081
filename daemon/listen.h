/*
 * listen.h - listening sockets. Each worker gets its own socket for every
 * listener, all bound to the same address with SO_REUSEPORT, so the kernel
 * spreads new connections across workers and no accept is shared.
 */
#ifndef NPD_LISTEN_H
#define NPD_LISTEN_H

#include "config.h"

/* A listening socket for l. Returns the fd, or -1 with errno set. */
int npd_listen_open(const struct npd_listener *l);

/*
 * Whether l's address is free of other listeners. SO_REUSEPORT would let a
 * second netproxyd (or any program of the same user that sets it) bind the
 * same port and share its connections in silence; a socket without it
 * cannot, and says so. Returns 0, or -1 with errno (EADDRINUSE).
 */
int npd_listen_probe(const struct npd_listener *l);

#endif /* NPD_LISTEN_H */
