/*
 * stats.h - netproxyd's counters, for the Prometheus endpoint (stats_listen).
 *
 * Each worker counts in its own struct npd_stats, and only that worker
 * writes it: a count is a relaxed load and store of a 64-bit word on the
 * worker's own cache lines (a plain add on x86-64 and arm64), with no lock
 * and no read-modify-write bus cycle. The stats thread reads them with
 * relaxed loads and sums the workers when it is scraped, so a scrape never
 * stops a worker. Relaxed atomics, not plain words, so that the compiler
 * cannot tear a store and ThreadSanitizer knows the race is meant.
 *
 * Services are a config generation's, and a reload may add, drop or reorder
 * them while connections of older generations still run. Counters are kept
 * by service name, in slots created the first time a worker meets the
 * name and kept for the life of the process: a series never goes back,
 * whichever generation its connections came from. A connection holds a
 * pointer to its slot from accept to close. A worker maps its current
 * generation's service indexes to slots once per generation.
 */
#ifndef NPD_STATS_H
#define NPD_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

struct npd_conn;
struct npd_gen;
struct np_header;

/*
 * How a connection ended, a small fixed set for the result label of
 * netproxyd_connections_closed_total (the log line keeps the detail).
 */
enum npd_result {
	NPD_RESULT_NONE = 0, /* not decided by an event: npd_stats_conn_closed() derives it */
	NPD_RESULT_DONE,	   /* relayed; both directions ended */
	NPD_RESULT_RELAY_ERROR,	   /* relayed; a side failed (reset, broken pipe) */
	NPD_RESULT_ABORTED,	   /* the client left (or failed) before its header was complete */
	NPD_RESULT_HEADER_TIMEOUT, /* no complete header within proxy_header_timeout */
	NPD_RESULT_HEADER_ERROR,   /* a malformed header, or one over proxy_max_header */
	NPD_RESULT_UNMAPPED,	   /* a port mapped to no service */
	NPD_RESULT_BACKEND_ERROR,  /* the backend refused, was unreachable, or failed at once */
	NPD_RESULT_CONNECT_TIMEOUT, /* the backend did not answer within connect_timeout */
	NPD_RESULT_IDLE_TIMEOUT,   /* relayed; idle for the service's idle_timeout */
	NPD_RESULT_SHED,	   /* closed at the connection limit, waiting longest for its header */
	NPD_RESULT_SHUTDOWN,	   /* still open when netproxyd stopped */
	NPD_RESULT_COUNT
};

/* The result label's text for r (never NULL). */
const char *npd_result_name(enum npd_result r);

/* Why a connection was closed at accept, before it had a struct npd_conn. */
enum npd_reject {
	NPD_REJECT_UNTRUSTED,	   /* its peer is not in proxy_trusted_proxies */
	NPD_REJECT_LIMIT,	   /* at the connection limit, none waiting for its header */
	NPD_REJECT_NO_DESCRIPTORS, /* accept() hit the descriptor limit: shed at once */
	NPD_REJECT_COUNT
};

const char *npd_reject_name(enum npd_reject r);

/*
 * Histogram bounds in milliseconds, the resolution of the worker's loop
 * clock (a wait under 1 ms is counted as 0). The last bucket is +Inf.
 */
#define NPD_STATS_BUCKETS 12
extern const int npd_stats_bucket_ms[NPD_STATS_BUCKETS];

struct npd_stats_hist {
	_Atomic uint64_t count[NPD_STATS_BUCKETS + 1]; /* per bucket, not cumulative; [last] +Inf */
	_Atomic uint64_t sum_ms;
};

/* The counters of one service name, in one worker. */
struct npd_stats_service {
	char name[NPD_NAME_MAX]; /* written before the slot is published, then never */
	_Atomic uint64_t accepted;
	_Atomic uint64_t closed[NPD_RESULT_COUNT];
	_Atomic uint64_t bytes_up;   /* read from clients, for their backends */
	_Atomic uint64_t bytes_down; /* read from backends, for their clients */
	struct npd_stats_hist connect; /* header complete → backend connected */
};

/*
 * Slots per worker: service names met over the process's life, in the same
 * slots in every worker (stats.c keeps the names for the process). Slot 0
 * is "-", ports mapped to no service; the last, "(other)", takes every name
 * past the 62 others, so that the memory is fixed (about 20 KiB per worker)
 * and the series are at most 64 per metric.
 */
#define NPD_STATS_SERVICES 64
#define NPD_STATS_OTHER (NPD_STATS_SERVICES - 1)
/* Reasons of header failures: -NP_E* codes from 1 to this; [0] is any other. */
#define NPD_STATS_HEADER_ERRORS 21

struct npd_snapshot;

struct npd_stats {
	struct npd_stats_service service[NPD_STATS_SERVICES];
	atomic_size_t nservices; /* slots in use: stored with release after the name */
	_Atomic uint64_t rejected[NPD_REJECT_COUNT];
	_Atomic uint64_t header_failed[NPD_STATS_HEADER_ERRORS];
	_Atomic uint64_t headers[2][2]; /* [version 1 or 2 - 1][0 LOCAL (v1 UNKNOWN), 1 PROXY] */
	struct npd_stats_hist header_wait; /* accept → header complete */

	/* The worker's own, never read by another thread. */
	const struct npd_gen *map_gen; /* the generation map was built for */
	unsigned map_number;
	uint8_t map[256]; /* service index of map_gen → slot; services past 255 go to "(other)" */

	/* A request for the list of connections (stats_snapshot.c), under its lock. */
	struct npd_snapshot *snapshot;
	/*
	 * Under the same lock: a request went unanswered in time, and the
	 * worker has not taken its mail since. It is not waited for again
	 * until it has.
	 */
	bool owing;
};

/* Add n to a counter only the calling worker writes. */
static inline void npd_stat_add(_Atomic uint64_t *counter, uint64_t n)
{
	atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline uint64_t npd_stat_get(_Atomic uint64_t *counter)
{
	return atomic_load_explicit(counter, memory_order_relaxed);
}

/*
 * The hooks: each is called by the worker that owns the connection, at the
 * event it is named for. A connection that never went through
 * npd_stats_conn_open() (a unit test's) is counted nowhere.
 */

/* Accepted: c's listener is set. Takes c's slot and counts it accepted. */
void npd_stats_conn_open(struct npd_conn *c);
/* c's header is complete and parsed into h (before its service is looked at). */
void npd_stats_header_done(struct npd_conn *c, const struct np_header *h);
/* c's header is malformed or too big: err is the NP_E* code. */
void npd_stats_header_failed(struct npd_conn *c, int err);
/* c's backend is connected. */
void npd_stats_connected(struct npd_conn *c);
/* c's timer expired, in whichever state it is. */
void npd_stats_expired(struct npd_conn *c);
/* c is being closed for result r (shed, shutdown): this result wins over a derived one. */
void npd_stats_close_for(struct npd_conn *c, enum npd_result r);
/* c is being closed (npd_conn_close): counts its result. */
void npd_stats_conn_closed(struct npd_conn *c);
/* A connection was refused at accept, before a byte was read. */
void npd_stats_rejected(struct npd_stats *st, enum npd_reject why);

/*
 * Count the bytes c's relay has read since the last call (conn.c calls it
 * whenever the relay moved some, and at the close): the counters follow a
 * long connection as it goes, not only when it ends.
 */
void npd_stats_relayed(struct npd_conn *c);

/* --- the process's own, set by main ---------------------------------------- */

/* Generation number running now (after a start or a successful reload). */
void npd_stats_generation(unsigned number);
/* A reload failed: the running generation stays. */
void npd_stats_reload_failed(void);
unsigned npd_stats_generation_now(void);
uint64_t npd_stats_reload_failures(void);
/* When the process started (its first generation), in seconds since the epoch. */
double npd_stats_start_time(void);

#endif /* NPD_STATS_H */
