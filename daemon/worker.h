/*
 * worker.h - one event loop per thread. A worker owns its loop (epoll,
 * timers, ready list: loop.h), its SO_REUSEPORT listening sockets, its
 * connections (conn.h) and its buffer pool (buffers.h), and shares nothing
 * with the other workers but the read-only config generation (gen.h).
 */
#ifndef NPD_WORKER_H
#define NPD_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffers.h"
#include "config.h"
#include "conn.h"
#include "gen.h"
#include "loop.h"
#include "stats.h"

struct npd_worker;

/* One listening socket of one worker. */
struct npd_lsock {
	struct npd_watch watch; /* accepts, on the worker's loop */
	struct npd_worker *w;
	int fd;
	int listener; /* index into the running generation's listeners */
};

/* What main hands a worker: a generation (with a reference for it) and its sockets. */
struct npd_worker_update {
	struct npd_worker_update *next; /* queued behind this one */
	struct npd_gen *gen;
	size_t nsocks;
	struct npd_lsock_spec {
		int fd;
		int listener;
	} socks[];
};

/*
 * Every turn of a worker's loop is bounded, so that no connection waits long
 * for one that has much to do. A connection reads at most NPD_TURN_BYTES
 * (relay.h) from each of its sides when it has the loop; one that used them
 * while a socket was still readable goes to the tail of the loop's ready
 * list (conn.c). Each turn serves the connections with events that are not queued,
 * then the one queued longest: however many streams are queued, a new
 * connection or a small request waits at most for one of them. At most
 * NPD_EXPIRIES_PER_TURN timers expire in a turn, earliest first. While
 * either kind of work is left over, epoll_wait only looks for events,
 * without waiting.
 *
 * NPD_TURN_BYTES is four bulk buffers (NPD_BULK_SIZE, buffers.h): about
 * 1.5 ms of copying on loopback. 1 MiB per connection, every queued
 * connection served each turn, cost 15-20% more CPU per GiB with four
 * streams (the peers are woken four times as often), for no better latency.
 */
#define NPD_EXPIRIES_PER_TURN 64

struct npd_worker {
	int id;
	pthread_t thread;
	struct npd_loop loop;
	int wakefd; /* eventfd: main has put an update in the mailbox, or wants a stop */
	struct npd_watch wake_watch;

	/* The mailbox, the only state main and the worker share. */
	pthread_mutex_t lock;
	struct npd_worker_update *pending;
	bool stop;
	int drain_ms; /* main asks for a graceful stop with this grace (ms); -1: not asked */

	/*
	 * A graceful stop (npd_worker_drain): the listeners are gone, connections
	 * still waiting for their header closed, and the loop runs until the
	 * last connection ends or drain_until passes. drain_left is for main's
	 * STATUS (SIZE_MAX until the drain began); the counts, for its summary
	 * line once the worker is joined.
	 */
	bool draining;
	int64_t drain_until;
	atomic_size_t drain_left;
	size_t drain_relayed;	/* connections open when the drain began */
	size_t drain_cut;	/* of them, closed "shutting down" (from conns, at the end) */
	size_t drain_unheaded;	/* of those, still waiting for their header */

	struct npd_gen *gen; /* the generation new connections get */
	struct npd_lsock *socks;
	size_t nsocks;
	struct npd_lsock *old_socks; /* replaced this turn; freed at its end */
	bool socks_changed;
	size_t nworkers;

	struct npd_buf_pool bufs;
	struct npd_conns conns;
	size_t max_conns;
	atomic_bool done; /* the thread has left its loop and closed its connections */
	int reserve_fd; /* given up when accept() hits the fd limit, to shed one connection */
	int64_t reject_log_until; /* rate limit for rejection lines */
	unsigned reject_suppressed;

	/* Out of file descriptors: accept() failed with EMFILE or ENFILE (worker.c). */
	bool fd_short;		     /* in such an episode: it has been logged */
	int64_t fd_short_since;	     /* its first failed accept() */
	int64_t fd_short_last;	     /* its last: it ends after a second without one */
	unsigned fd_refused;	     /* connections taken and closed at once during it */
	unsigned fd_pauses;	     /* times it had no spare and rested its listeners */
	int64_t accept_paused_until; /* listeners disarmed until then (no spare); 0: armed */

	struct npd_stats stats; /* written by this worker only; read by the stats thread */
};

/*
 * The descriptor limit netproxyd runs with, set by main before the workers
 * start; without max_connections, the connection limit follows from it.
 */
extern size_t npd_fd_limit;

/* The connection limit of cfg for the whole process (max_connections, or from npd_fd_limit). */
size_t npd_connection_limit(const struct npd_config *cfg, int nworkers);

/* Set up worker id of nworkers (epoll, eventfd); nothing runs until npd_worker_start. */
int npd_worker_init(struct npd_worker *w, int id, int nworkers);
int npd_worker_start(struct npd_worker *w);

/* Hand the worker an update (it takes ownership), or ask it to stop; wakes it. */
void npd_worker_post(struct npd_worker *w, struct npd_worker_update *u);
void npd_worker_stop(struct npd_worker *w);
/*
 * Stop gracefully: stop accepting, close the connections still waiting for
 * their header, let the others finish for up to grace_ms, then close what
 * is left ("shutting down") and end the thread. npd_worker_stop during it
 * closes everything at once. npd_worker_done says whether the thread ended.
 */
void npd_worker_drain(struct npd_worker *w, int grace_ms);
/* Called by each worker's thread as it ends, when set (main: to wake its wait). */
extern void (*npd_worker_ended)(void);
bool npd_worker_done(struct npd_worker *w);
void npd_worker_join(struct npd_worker *w);

/*
 * The parts of a loop turn, for the loop and the unit tests. A turn: read
 * the clock into loop.now_ms and count it in loop.turn; dispatch epoll's
 * events (a connection on the ready list waits for its place there); run
 * the head of the ready list (npd_loop_run_ready); expire timers
 * (npd_worker_expire); then wait at most npd_worker_timeout() ms.
 */

/*
 * Expire the timers due at w->loop.now_ms, earliest first, at most
 * NPD_EXPIRIES_PER_TURN of them. Returns true when some are still due.
 */
bool npd_worker_expire(struct npd_worker *w);

/* How long epoll_wait may wait, in ms: 0 while work is left for the next turn; -1: forever. */
int npd_worker_timeout(struct npd_worker *w);

/*
 * Log a rejected connection, at most a few lines per second per worker, so a
 * flood of bad peers cannot flood the log; the lines left out are counted.
 */
__attribute__((format(printf, 2, 3))) void npd_worker_log_reject(struct npd_worker *w,
								  const char *fmt, ...);

#endif /* NPD_WORKER_H */
