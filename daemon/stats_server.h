/*
 * stats_server.h - the stats listener (stats_listen): a thread of its own
 * that answers GET /metrics (Prometheus), /connections and
 * /connections.json over minimal HTTP/1.x, one request per connection.
 *
 * It never runs on a worker's loop: a slow or hostile client of the stats
 * port costs this thread a slot (of a few, the oldest given up for a new
 * one), never a relayed connection its turn. Requests are capped in size
 * and each client has a deadline for its request and the answer.
 */
#ifndef NPD_STATS_SERVER_H
#define NPD_STATS_SERVER_H

#include <stddef.h>

#include "config.h"

struct npd_worker;
struct npd_stats_server;

#define NPD_STATS_CLIENTS 16	     /* served at once; a new one drops one (stats_server.c) */
#define NPD_STATS_REQUEST_MAX 4096   /* bytes of request line and headers */
#define NPD_STATS_CLIENT_MS 5000     /* for the request and the answer, together */
#define NPD_STATS_LINGER_MS 1000     /* after the answer, for the client's close */
#define NPD_STATS_LINGER_BYTES 65536 /* read and discarded after the answer, at most */
#define NPD_CONNECTIONS_LIMIT 1000   /* connections listed without ?limit= */
/*
 * Each worker gets a buffer of ?limit= entries (about 160 bytes each): at
 * most 1.6 MB per worker for one request.
 */
#define NPD_CONNECTIONS_LIMIT_MAX 10000

/*
 * A listening socket for t (an address, or a UNIX socket whose stale file
 * is replaced). Opened by main before it drops privileges. Returns the
 * descriptor, or -1 with the cause in why.
 */
int npd_stats_listen(const struct npd_target *t, char *why, size_t cap);

/*
 * Serve on fd (taken over) from a thread of its own; where names it in log
 * lines. The workers' counters are read, and their connections asked for,
 * until npd_stats_server_stop(), which must come before the workers are
 * joined. Returns NULL, with the cause logged, when the thread cannot start.
 */
struct npd_stats_server *npd_stats_server_start(int fd, const char *where,
						struct npd_worker *workers, int nworkers);

/* Stop the thread, close its sockets and free s; NULL does nothing. */
void npd_stats_server_stop(struct npd_stats_server *s);

#endif /* NPD_STATS_SERVER_H */
