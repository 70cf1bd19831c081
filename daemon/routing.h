/*
 * routing.h - the policy routing transparent delivery needs.
 *
 * A backend answers a transparent connection at the client's own address,
 * which is not this host's: without a rule, the reply goes out to the real
 * client (or nowhere) instead of back to netproxyd. A policy rule that sends
 * the backend's packets to a table routing every address locally brings
 * them back, on one host (backend on loopback) or two (the backend routes
 * client addresses through this host).
 */
#ifndef NPD_ROUTING_H
#define NPD_ROUTING_H

#include <stdbool.h>
#include <stdio.h>

#include "config.h"

/* The table the commands use. */
#define NPD_ROUTING_TABLE 7001

/*
 * Whether the routing is there for each address family a transparent
 * service of cfg uses: a policy rule leading to a table that has a local
 * route for every address. When it is missing, writes the exact commands
 * that install it to out, one per line, and returns false.
 */
bool npd_routing_check(const struct npd_config *cfg, FILE *out);

/*
 * Install what npd_routing_check() finds missing, with ip(8). Returns 0 when
 * the routing is (now) there, -1 when a command failed (said on stderr).
 */
int npd_routing_setup(const struct npd_config *cfg);

/*
 * Whether a rule's FRA_IIFNAME attribute, len bytes at name (the kernel
 * counts its NUL), names the loopback device "lo". Reads nothing past len.
 */
bool npd_routing_is_lo(const void *name, size_t len);

#endif /* NPD_ROUTING_H */
