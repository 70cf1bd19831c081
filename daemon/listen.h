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

#endif /* NPD_LISTEN_H */
