/*
 * stats_snapshot.c - the list of live connections: the stats thread's
 * request through each worker's wake-up, and the worker's answer.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "stats_snapshot.h"
#include "worker.h"

/* One worker's part of a request: filled by that worker under `lock`. */
struct npd_snapshot {
	struct npd_conn_info *entries;
	size_t cap, n, total;
	bool done;
};

/*
 * One lock for every worker's request field: only the stats thread and a
 * worker answering take it, a few times per request, never on the relay's
 * path.
 */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t answered;
static pthread_once_t answered_once = PTHREAD_ONCE_INIT;

static void init_answered(void)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&answered, &attr);
	pthread_condattr_destroy(&attr);
}

void npd_stats_answer(struct npd_worker *w)
{
	pthread_mutex_lock(&lock);
	struct npd_snapshot *req = w->stats.snapshot;
	w->stats.owing = false; /* it takes its mail again */
	if (req) {
		for (struct npd_list *pos = w->conns.open.next; pos != &w->conns.open; pos = pos->next) {
			const struct npd_conn *c = npd_container_of(pos, struct npd_conn, link);
			if (c->state == NPD_CONN_CLOSED)
				continue;
			req->total++;
			if (req->n == req->cap)
				continue; /* counted, not listed */
			struct npd_conn_info *e = &req->entries[req->n++];
			e->id = c->id;
			snprintf(e->service, sizeof(e->service), "%s", c->service ? c->service->name : "-");
			e->client = c->client_addr;
			e->peer = c->peer_addr;
			e->local = c->local_addr;
			e->state = c->state;
			e->start_ms = c->start_ms;
			e->up = c->relay.client.bytes;
			e->down = c->relay.backend.bytes;
		}
		req->done = true;
		w->stats.snapshot = NULL;
		pthread_cond_broadcast(&answered);
	}
	pthread_mutex_unlock(&lock);
}

static int by_id(const void *a, const void *b)
{
	const struct npd_conn_info *x = a, *y = b;

	return (x->id > y->id) - (x->id < y->id);
}

static struct timespec in_ms(int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

long npd_snapshot_take(struct npd_worker *workers, int nworkers, size_t limit,
		       struct npd_conn_info **out, size_t *total, int *missing)
{
	struct npd_snapshot *req = calloc((size_t)nworkers, sizeof(*req));
	long n = -1;

	*out = NULL;
	*total = 0;
	*missing = 0;
	pthread_once(&answered_once, init_answered);
	if (!req)
		return -1;
	for (int k = 0; k < nworkers; k++) {
		req[k].cap = limit;
		req[k].done = npd_worker_done(&workers[k]); /* its connections are closed */
		if (!req[k].done && !(req[k].entries = malloc((limit ? limit : 1) * sizeof(*req[k].entries))))
			goto out;
	}
	/*
	 * A worker that let the last request go unanswered and has not taken
	 * its mail since is stuck, or busy for long: it is not asked, and the
	 * list says it is missing at once. Otherwise each request would wait
	 * for it in full, one after the other, and a few clients asking for
	 * the list would hold up every scrape of /metrics behind them.
	 */
	pthread_mutex_lock(&lock);
	for (int k = 0; k < nworkers; k++) {
		if (req[k].done)
			continue;
		if (workers[k].stats.owing) {
			free(req[k].entries);
			req[k].entries = NULL;
			(*missing)++;
			continue;
		}
		workers[k].stats.snapshot = &req[k];
	}
	pthread_mutex_unlock(&lock);
	for (int k = 0; k < nworkers; k++) {
		uint64_t one = 1;
		/*
		 * The worker's wake-up: it answers when it takes its mail
		 * (worker.c). Asked is read from entries, which only this thread
		 * writes: done is the worker's to write once asked, and it may
		 * have answered already, woken by other mail.
		 */
		if (req[k].entries) {
			ssize_t r = write(workers[k].wakefd, &one, sizeof(one));
			(void)r; /* a full counter still wakes it */
		}
	}

	int64_t until = npd_now_ms() + NPD_SNAPSHOT_WAIT_MS;
	pthread_mutex_lock(&lock);
	for (;;) {
		bool all = true;
		for (int k = 0; k < nworkers; k++)
			all = all && (!req[k].entries || req[k].done || npd_worker_done(&workers[k]));
		if (all || npd_now_ms() >= until)
			break;
		/* In slices: a worker that ends meanwhile never answers, and is not waited for. */
		struct timespec slice = in_ms(50);
		pthread_cond_timedwait(&answered, &lock, &slice);
	}
	for (int k = 0; k < nworkers; k++) {
		if (req[k].done || !req[k].entries)
			continue;
		workers[k].stats.snapshot = NULL; /* withdrawn: its buffer is freed below */
		if (!npd_worker_done(&workers[k])) {
			workers[k].stats.owing = true;
			(*missing)++;
		}
	}
	pthread_mutex_unlock(&lock);

	size_t all = 0;
	for (int k = 0; k < nworkers; k++) {
		all += req[k].n;
		*total += req[k].total;
	}
	struct npd_conn_info *merged = malloc((all ? all : 1) * sizeof(*merged));
	if (!merged)
		goto out;
	size_t m = 0;
	for (int k = 0; k < nworkers; k++) {
		memcpy(merged + m, req[k].entries ? req[k].entries : merged, req[k].n * sizeof(*merged));
		m += req[k].n;
	}
	qsort(merged, m, sizeof(*merged), by_id);
	*out = merged;
	n = (long)(m < limit ? m : limit);
out:
	for (int k = 0; k < nworkers; k++)
		free(req[k].entries);
	free(req);
	return n;
}
