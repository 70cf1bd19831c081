/*
 * stats.c - counting: the hooks the workers call at a connection's events,
 * into their own struct npd_stats (stats.h says why no lock is needed), and
 * the few process-wide figures main sets.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "netproxy.h"
#include "stats.h"

const int npd_stats_bucket_ms[NPD_STATS_BUCKETS] = {1,	 5,    10,   25,   50,	 100,
						    250, 500,  1000, 2500, 5000, 10000};

const char *npd_result_name(enum npd_result r)
{
	static const char *const names[NPD_RESULT_COUNT] = {
		[NPD_RESULT_NONE] = "unknown",
		[NPD_RESULT_DONE] = "done",
		[NPD_RESULT_RELAY_ERROR] = "relay_error",
		[NPD_RESULT_ABORTED] = "aborted",
		[NPD_RESULT_HEADER_TIMEOUT] = "header_timeout",
		[NPD_RESULT_HEADER_ERROR] = "header_error",
		[NPD_RESULT_UNMAPPED] = "unmapped",
		[NPD_RESULT_BACKEND_ERROR] = "backend_error",
		[NPD_RESULT_CONNECT_TIMEOUT] = "connect_timeout",
		[NPD_RESULT_IDLE_TIMEOUT] = "idle_timeout",
		[NPD_RESULT_SHED] = "shed",
		[NPD_RESULT_SHUTDOWN] = "shutdown",
	};
	return r < NPD_RESULT_COUNT ? names[r] : "unknown";
}

const char *npd_reject_name(enum npd_reject r)
{
	static const char *const names[NPD_REJECT_COUNT] = {
		[NPD_REJECT_UNTRUSTED] = "untrusted",
		[NPD_REJECT_LIMIT] = "limit",
		[NPD_REJECT_NO_DESCRIPTORS] = "no_descriptors",
	};
	return r < NPD_REJECT_COUNT ? names[r] : "unknown";
}

/*
 * The names that have a slot, the same in every worker: slot k is one name
 * everywhere, so that a name past the 62 is "(other)" in every worker, never
 * its own series in one and part of "(other)" in another, and the series
 * are at most NPD_STATS_SERVICES for the process whatever the workers met.
 * Appended under the lock, a worker's first meeting with a name (once per
 * generation at most), and never changed once published.
 */
static char names[NPD_STATS_SERVICES][NPD_NAME_MAX] = {"-"};
static atomic_size_t nnames = 1; /* stored with release after the name */
static pthread_mutex_t names_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t find_name(size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return n;
}

/*
 * The slot for a service name, published for every worker if it is new,
 * and copied into st's own slots. Only the owning worker calls this for st.
 */
static uint8_t slot_for(struct npd_stats *st, const char *name)
{
	size_t n = atomic_load_explicit(&nnames, memory_order_acquire);
	size_t k = find_name(n, name);

	if (k == n && n < NPD_STATS_SERVICES) {
		pthread_mutex_lock(&names_lock);
		n = atomic_load_explicit(&nnames, memory_order_relaxed);
		k = find_name(n, name);
		if (k == n && n < NPD_STATS_OTHER) {
			snprintf(names[n], sizeof(names[n]), "%s", name);
			atomic_store_explicit(&nnames, ++n, memory_order_release);
		} else if (k == n) { /* the 62 are taken: "(other)" from now on */
			snprintf(names[n], sizeof(names[n]), "(other)");
			atomic_store_explicit(&nnames, ++n, memory_order_release);
		}
		pthread_mutex_unlock(&names_lock);
	}
	if (k >= NPD_STATS_OTHER)
		k = NPD_STATS_OTHER;
	/* The worker's own copies, up to the slot it counts in. */
	size_t mine = atomic_load_explicit(&st->nservices, memory_order_relaxed);
	if (mine <= k) {
		for (size_t i = mine; i <= k; i++)
			memcpy(st->service[i].name, names[i], sizeof(names[i]));
		/* Release: the stats thread that sees the count sees the names. */
		atomic_store_explicit(&st->nservices, k + 1, memory_order_release);
	}
	return (uint8_t)k;
}

/* Map gen's service indexes to slots: once per generation, at its first connection. */
static void map_generation(struct npd_stats *st, const struct npd_gen *gen)
{
	const struct npd_config *cfg = gen->cfg;

	slot_for(st, "-");
	for (size_t i = 0; i < cfg->nservices && i < sizeof(st->map); i++)
		st->map[i] = slot_for(st, cfg->services[i].name);
	st->map_gen = gen;
	st->map_number = gen->number;
}

void npd_stats_conn_open(struct npd_conn *c)
{
	struct npd_stats *st = c->owner->stats;
	int svc = c->listener->service;

	/*
	 * The number as well as the pointer: a generation freed long ago may
	 * have left its address to a new one.
	 */
	if (st->map_gen != c->gen || st->map_number != c->gen->number)
		map_generation(st, c->gen);
	if (svc < 0)
		c->stats = &st->service[0];
	else if ((size_t)svc < sizeof(st->map))
		c->stats = &st->service[st->map[svc]];
	else
		c->stats = &st->service[slot_for(st, c->gen->cfg->services[svc].name)];
	npd_stat_add(&c->stats->accepted, 1);
}

static void observe(struct npd_stats_hist *h, int64_t ms)
{
	int b = 0;

	if (ms < 0)
		ms = 0;
	while (b < NPD_STATS_BUCKETS && ms > npd_stats_bucket_ms[b])
		b++;
	npd_stat_add(&h->count[b], 1);
	npd_stat_add(&h->sum_ms, (uint64_t)ms);
}

void npd_stats_header_done(struct npd_conn *c, const struct np_header *h)
{
	struct npd_stats *st = c->owner->stats;

	c->header_ms = c->owner->loop->now_ms;
	if (!c->stats)
		return;
	if (h->version == 1 || h->version == 2)
		npd_stat_add(&st->headers[h->version - 1][h->command == NP_CMD_PROXY], 1);
	observe(&st->header_wait, c->header_ms - c->start_ms);
}

void npd_stats_header_failed(struct npd_conn *c, int err)
{
	if (!c->stats)
		return;
	c->result = NPD_RESULT_HEADER_ERROR;
	npd_stat_add(&c->owner->stats->header_failed[err < 0 && -err < NPD_STATS_HEADER_ERRORS ? -err : 0],
		     1);
}

void npd_stats_connected(struct npd_conn *c)
{
	if (c->stats)
		observe(&c->stats->connect, c->owner->loop->now_ms - c->header_ms);
}

void npd_stats_expired(struct npd_conn *c)
{
	switch (c->state) {
	case NPD_CONN_HEADER:
		c->result = NPD_RESULT_HEADER_TIMEOUT;
		break;
	case NPD_CONN_CONNECTING:
		c->result = NPD_RESULT_CONNECT_TIMEOUT;
		break;
	case NPD_CONN_RELAY:
		c->result = NPD_RESULT_IDLE_TIMEOUT;
		break;
	default: /* a lingering close's end: the relay was over, its result stands */
		break;
	}
}

void npd_stats_close_for(struct npd_conn *c, enum npd_result r)
{
	c->result = (uint8_t)r;
}

/* The result of a connection closed with no event having said it. */
static enum npd_result derived_result(const struct npd_conn *c)
{
	switch (c->state) {
	case NPD_CONN_RELAY:
	case NPD_CONN_LINGER:
		return c->relay.client.error || c->relay.backend.error ? NPD_RESULT_RELAY_ERROR
								       : NPD_RESULT_DONE;
	case NPD_CONN_CONNECTING:
		return NPD_RESULT_BACKEND_ERROR;
	default:
		/* A target is chosen once the service is known: the backend's socket failed. */
		if (c->target)
			return NPD_RESULT_BACKEND_ERROR;
		return c->version ? NPD_RESULT_UNMAPPED : NPD_RESULT_ABORTED;
	}
}

void npd_stats_conn_closed(struct npd_conn *c)
{
	if (!c->stats)
		return;
	npd_stats_relayed(c);
	enum npd_result r = c->result ? (enum npd_result)c->result : derived_result(c);
	npd_stat_add(&c->stats->closed[r], 1);
}

void npd_stats_rejected(struct npd_stats *st, enum npd_reject why)
{
	npd_stat_add(&st->rejected[why], 1);
}

void npd_stats_relayed(struct npd_conn *c)
{
	const struct npd_relay *r = &c->relay;

	if (!c->stats)
		return;
	if (r->client.bytes != c->counted_up) {
		npd_stat_add(&c->stats->bytes_up, r->client.bytes - c->counted_up);
		c->counted_up = r->client.bytes;
	}
	if (r->backend.bytes != c->counted_down) {
		npd_stat_add(&c->stats->bytes_down, r->backend.bytes - c->counted_down);
		c->counted_down = r->backend.bytes;
	}
}

/* --- main's ------------------------------------------------------------------ */

static atomic_uint generation;
static _Atomic uint64_t reload_failures;
/* Set by main with the first generation, before the stats thread starts: no race. */
static double start_time;

void npd_stats_generation(unsigned number)
{
	if (start_time == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		start_time = (double)ts.tv_sec + ts.tv_nsec / 1e9;
	}
	atomic_store_explicit(&generation, number, memory_order_relaxed);
}

void npd_stats_reload_failed(void)
{
	atomic_fetch_add_explicit(&reload_failures, 1, memory_order_relaxed);
}

unsigned npd_stats_generation_now(void)
{
	return atomic_load_explicit(&generation, memory_order_relaxed);
}

uint64_t npd_stats_reload_failures(void)
{
	return atomic_load_explicit(&reload_failures, memory_order_relaxed);
}

double npd_stats_start_time(void)
{
	return start_time;
}
