/*
 * activation.h - listening sockets passed by the service manager (socket
 * activation: LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, sd_listen_fds(3)).
 *
 * A listener whose address is that of a passed socket (getsockname) takes
 * that socket instead of opening its own; the others are opened as usual.
 * The passed socket is one accept queue shared by every worker: each gets
 * its own descriptor for it (a dup), so that each closes its own as it
 * does with the SO_REUSEPORT sockets it opens. main keeps the passed
 * descriptors themselves until exit, so a reload that drops a listener and
 * a later one that adds it back find the socket again, and the queue
 * outlives netproxyd only through the manager's own copy (the .socket
 * unit): a connection that arrives while netproxyd restarts waits in it.
 */
#ifndef NPD_ACTIVATION_H
#define NPD_ACTIVATION_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* What npd_activation_socket() returns when it gives no descriptor. */
#define NPD_ACTIVATION_NONE (-1)    /* no passed socket: open one as usual */
#define NPD_ACTIVATION_COVERED (-2) /* a passed dual-stack socket receives l's connections */
#define NPD_ACTIVATION_ERROR (-3)   /* the passed socket could not be duplicated: errno */

/*
 * Take the sockets passed to this process: when LISTEN_PID is this
 * process's id, descriptors 3 .. 3 + LISTEN_FDS - 1, named by
 * LISTEN_FDNAMES. Each that is a listening stream socket is made
 * non-blocking and close-on-exec and kept; any other is logged and closed.
 * The three variables are removed from the environment either way. Call
 * once, before any thread starts. Returns the number of sockets kept.
 */
int npd_activation_init(void);

/*
 * A socket for listener l of cfg: a new descriptor for the passed socket
 * bound to l's address, which the caller owns and closes. Else
 * NPD_ACTIVATION_NONE when no passed socket has that address;
 * NPD_ACTIVATION_COVERED when l is an IPv4 address whose port a passed IPv6
 * wildcard socket that takes IPv4 too (not IPV6_V6ONLY, systemd's default)
 * serves for another listener of cfg, so that opening l would fail and its
 * connections arrive there as v4-mapped addresses; NPD_ACTIVATION_ERROR
 * with errno when the descriptor could not be duplicated (EMFILE).
 */
int npd_activation_socket(const struct npd_config *cfg, const struct npd_listener *l);

/*
 * How many passed sockets the listeners of cfg take. With warn, each that
 * none takes is logged as a warning: its connections wait unanswered.
 */
size_t npd_activation_used(const struct npd_config *cfg, bool warn);

#endif /* NPD_ACTIVATION_H */
