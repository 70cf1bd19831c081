/*
 * stats_snapshot.h - the list of live connections (GET /connections).
 *
 * A connection belongs to its worker, and only that worker may read it. The
 * stats thread asks each worker for a list through the worker's mailbox
 * wake-up (its eventfd) and waits, for a bounded time, while each fills a
 * bounded buffer between two events of its loop: each worker's list is
 * consistent, and no connection is touched by another thread.
 */
#ifndef NPD_STATS_SNAPSHOT_H
#define NPD_STATS_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"

struct npd_worker;

/* One connection as the list shows it: copies, nothing pointing into the worker. */
struct npd_conn_info {
	uint64_t id;
	char service[NPD_NAME_MAX]; /* "-" for an unmapped port */
	union npd_sockaddr client;  /* AF_UNSPEC before the header, and for LOCAL */
	union npd_sockaddr peer;
	union npd_sockaddr local; /* the address the service sees it come from; AF_UNSPEC before */
	uint8_t state; /* enum npd_conn_state */
	int64_t start_ms; /* on the monotonic clock (npd_now_ms) */
	uint64_t up, down; /* bytes read from the client, from the backend */
};

/* How long the stats thread waits for the workers' lists, in all. */
#define NPD_SNAPSHOT_WAIT_MS 1000

/*
 * Called by worker w between events (when it takes its mail): if the stats
 * thread asked for its connections, fill its buffer and wake it.
 */
void npd_stats_answer(struct npd_worker *w);

/*
 * The stats thread's side: ask every worker still running for its
 * connections, oldest first, at most limit from each. Returns them merged
 * in *out (free it), oldest first and at most limit, with their number;
 * *total is how many connections the workers have in all, and *missing how
 * many workers did not answer in time. Returns -1 when out of memory.
 */
long npd_snapshot_take(struct npd_worker *workers, int nworkers, size_t limit,
		       struct npd_conn_info **out, size_t *total, int *missing);

#endif /* NPD_STATS_SNAPSHOT_H */
