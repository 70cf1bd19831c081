/*
 * worker.c - the event loop of one thread: its mailbox from main, accepting
 * (trust, the connection limit, descriptor shortage), the turn of the loop,
 * the graceful stop. What a connection does is conn.c's.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include "addresses.h"
#include "conn.h"
#include "log.h"
#include "stats_snapshot.h"
#include "worker.h"

#define MAX_EVENTS 256
#define ACCEPTS_PER_TURN 64 /* then the connections already accepted get their turn */
#define ACCEPT_PAUSE_MS 50  /* out of descriptors with no spare: listeners rest this long */
#define FD_SHORT_QUIET_MS 1000 /* an episode without descriptors ends after this long */

/*
 * Descriptors are the process's, not a worker's. A worker sheds a connection
 * at the limit by closing its spare descriptor, accepting into the slot
 * freed, closing that and reopening the spare; if another worker's accept()
 * takes the slot in between, the spare is lost. So while any worker is out
 * of descriptors, every worker accepts and takes its spare under this lock.
 * (Other threads' descriptors, a backend's socket, may still take the slot:
 * a worker without a spare then rests its listeners, and takes a spare back
 * when one of its connections closes or the rest is over.)
 */

size_t npd_fd_limit = 1024;
void (*npd_worker_ended)(void);

/*
 * Each connection holds two descriptors (client and backend); the rest of
 * the process holds a few dozen plus a listening socket per listener and
 * worker. Without max_connections, the limit is what the descriptors allow,
 * so that the limit, not EMFILE, is what a flood meets.
 */
size_t npd_connection_limit(const struct npd_config *cfg, int nworkers)
{
	size_t reserve = 64 + cfg->nlisteners * (size_t)(nworkers > 0 ? nworkers : 1);

	if (cfg->max_connections > 0)
		return (size_t)cfg->max_connections;
	return npd_fd_limit > 2 * reserve ? (npd_fd_limit - reserve) / 2 : reserve / 2;
}

static pthread_mutex_t fd_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int fd_short_workers; /* workers in an episode (fd_short) */

static void on_wake(void *obj, uint32_t events);
static void on_listener(void *obj, uint32_t events);

void npd_worker_log_reject(struct npd_worker *w, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	/* A burst of ten lines, then at most one a second, with the count of the rest. */
	if (w->loop.now_ms < w->reject_log_until - 9000) {
		w->reject_suppressed++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (w->reject_suppressed) {
		npd_log(NPD_LOG_WARN, "%s (and %u more rejections not logged)", line,
			w->reject_suppressed);
		w->reject_suppressed = 0;
	} else {
		npd_log(NPD_LOG_WARN, "%s", line);
	}
	int64_t base = w->reject_log_until > w->loop.now_ms ? w->reject_log_until : w->loop.now_ms;
	w->reject_log_until = base + 1000;
	if (w->reject_log_until > w->loop.now_ms + 10000)
		w->reject_log_until = w->loop.now_ms + 10000;
}

int npd_worker_init(struct npd_worker *w, int id, int nworkers)
{
	memset(w, 0, sizeof(*w));
	w->id = id;
	w->nworkers = (size_t)nworkers;
	int looped = npd_loop_init(&w->loop);
	w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	w->drain_ms = -1;
	atomic_init(&w->drain_left, SIZE_MAX);
	atomic_init(&w->done, false);
	if (looped != 0 || w->wakefd < 0)
		return -1;
	w->wake_watch = (struct npd_watch){.fn = on_wake, .obj = w};
	if (npd_watch_add(&w->loop, w->wakefd, EPOLLIN, &w->wake_watch) != 0)
		return -1;
	pthread_mutex_init(&w->lock, NULL);
	npd_conns_init(&w->conns, &w->loop, &w->bufs, &w->stats);
	return 0;
}

static void wake(struct npd_worker *w)
{
	uint64_t one = 1;
	ssize_t n = write(w->wakefd, &one, sizeof(one));
	(void)n; /* a full counter still wakes the worker */
}

void npd_worker_post(struct npd_worker *w, struct npd_worker_update *u)
{
	/*
	 * Updates queue up and are applied in order: each one closes the sockets
	 * the next leaves out, so none is lost when two reloads come quickly.
	 */
	u->next = NULL;
	pthread_mutex_lock(&w->lock);
	struct npd_worker_update **tail = &w->pending;
	while (*tail)
		tail = &(*tail)->next;
	*tail = u;
	pthread_mutex_unlock(&w->lock);
	wake(w);
}

void npd_worker_stop(struct npd_worker *w)
{
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_mutex_unlock(&w->lock);
	wake(w);
}

void npd_worker_drain(struct npd_worker *w, int grace_ms)
{
	pthread_mutex_lock(&w->lock);
	w->drain_ms = grace_ms < 0 ? 0 : grace_ms;
	pthread_mutex_unlock(&w->lock);
	wake(w);
}

bool npd_worker_done(struct npd_worker *w)
{
	return atomic_load(&w->done);
}

/*
 * Switch to a new generation and socket set. Sockets the worker had and the
 * update keeps stay as they are; those it drops are closed here, by their
 * owner, so no event for them can be in flight.
 */
static void apply_update(struct npd_worker *w, struct npd_worker_update *u)
{
	struct npd_lsock *socks = calloc(u->nsocks ? u->nsocks : 1, sizeof(*socks));

	if (!socks) {
		npd_log(NPD_LOG_ERROR, "worker %d: out of memory applying the new config", w->id);
		npd_gen_release(u->gen);
		free(u);
		return;
	}
	for (size_t i = 0; i < u->nsocks; i++) {
		socks[i].watch = (struct npd_watch){.fn = on_listener, .obj = &socks[i]};
		socks[i].w = w;
		socks[i].fd = u->socks[i].fd;
		socks[i].listener = u->socks[i].listener;
	}
	for (size_t i = 0; i < w->nsocks; i++) {
		bool kept = false;
		for (size_t j = 0; j < u->nsocks && !kept; j++)
			kept = u->socks[j].fd == w->socks[i].fd;
		/*
		 * Out of the epoll set first, whether it closes or not: epoll forgets
		 * a socket only when its last descriptor closes, and of a socket
		 * passed by systemd main and the service manager hold others
		 * (activation.h), so a close alone would leave it registered, its
		 * events naming this freed array.
		 */
		npd_watch_del(&w->loop, w->socks[i].fd);
		if (!kept)
			close(w->socks[i].fd);
	}
	/* Every socket is (re)registered: the struct its event points at has moved. */
	for (size_t i = 0; i < u->nsocks; i++) {
		if (npd_watch_add(&w->loop, socks[i].fd, w->accept_paused_until ? 0 : EPOLLIN,
				  &socks[i].watch) != 0)
			npd_log(NPD_LOG_ERROR, "worker %d: epoll: %s", w->id, strerror(errno));
	}
	/* Events of this turn may still point into the old array: it goes after the turn. */
	free(w->old_socks);
	w->old_socks = w->socks;
	w->socks = socks;
	w->nsocks = u->nsocks;
	w->socks_changed = true;
	if (w->gen)
		npd_gen_release(w->gen);
	w->gen = u->gen;
	free(u);

	w->max_conns = (npd_connection_limit(w->gen->cfg, (int)w->nworkers) + w->nworkers - 1) /
		       w->nworkers;
}

/*
 * The graceful stop begins: the listening sockets leave the epoll set and
 * close (a socket the service manager passed stays open in its hands, and
 * its queue waits for the next netproxyd), so new connections are refused;
 * relayed connections go on. Returns true when nothing is left to wait for.
 */
static bool start_drain(struct npd_worker *w, int grace_ms)
{
	w->draining = true;
	w->drain_until = w->loop.now_ms + grace_ms;
	for (size_t i = 0; i < w->nsocks; i++) {
		npd_watch_del(&w->loop, w->socks[i].fd);
		close(w->socks[i].fd);
	}
	/*
	 * This turn's events may still point into the array (and into old_socks,
	 * when an update came in the same turn): it stays, unused, until
	 * shut_down() frees it.
	 */
	w->nsocks = 0;
	w->socks_changed = true;
	npd_conns_drain(&w->conns, grace_ms);
	w->drain_relayed = w->conns.n + w->conns.cut_unheaded;
	atomic_store(&w->drain_left, w->conns.n);
	return grace_ms == 0 || w->conns.n == 0;
}
/* Returns true when the worker is asked to stop. */
static bool take_mail(struct npd_worker *w)
{
	uint64_t count;
	ssize_t n = read(w->wakefd, &count, sizeof(count));
	(void)n;

	pthread_mutex_lock(&w->lock);
	struct npd_worker_update *u = w->pending;
	bool stop = w->stop;
	int drain_ms = w->drain_ms;
	w->pending = NULL;
	pthread_mutex_unlock(&w->lock);
	while (u) {
		struct npd_worker_update *next = u->next;
		apply_update(w, u);
		u = next;
	}
	npd_stats_answer(w); /* the stats thread may have asked for the connections */
	if (!stop && drain_ms >= 0 && !w->draining)
		stop = start_drain(w, drain_ms);
	return stop;
}

/* Take the spare descriptor back, if it was lost. */
static void take_spare(struct npd_worker *w)
{
	if (w->reserve_fd >= 0)
		return;
	pthread_mutex_lock(&fd_lock);
	w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	pthread_mutex_unlock(&fd_lock);
}

static int accept_locked(struct npd_worker *w, int lfd, union npd_sockaddr *peer, socklen_t *len)
{
	bool lock = w->fd_short || atomic_load_explicit(&fd_short_workers, memory_order_relaxed);

	if (lock)
		pthread_mutex_lock(&fd_lock);
	int fd = accept4(lfd, &peer->sa, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	int err = errno;
	if (lock)
		pthread_mutex_unlock(&fd_lock);
	errno = err;
	return fd;
}

/*
 * accept() failed for want of a descriptor: the first time in a while, say
 * so, once; the end of the episode (a second without) is said with its count.
 */
static void fd_short_begin(struct npd_worker *w, const struct npd_listener *l, int err)
{
	w->fd_short_last = w->loop.now_ms;
	if (w->fd_short)
		return;
	struct rlimit rl;
	char limit[32] = "?";
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		snprintf(limit, sizeof(limit), "%llu", (unsigned long long)rl.rlim_cur);
	w->fd_short = true;
	w->fd_short_since = w->loop.now_ms;
	w->fd_refused = w->fd_pauses = 0;
	atomic_fetch_add(&fd_short_workers, 1);
	npd_log(NPD_LOG_WARN, "worker %d: out of file descriptors accepting on %s (%s; the limit is "
		"%s): new connections are closed at once until some are free", w->id, l->addr_text,
		strerror(err), limit);
}

static void fd_short_end(struct npd_worker *w)
{
	int64_t ms = w->loop.now_ms - w->fd_short_since;

	w->fd_short = false;
	atomic_fetch_sub(&fd_short_workers, 1);
	char rested[96] = "";
	if (w->fd_pauses)
		snprintf(rested, sizeof(rested), "; with no spare descriptor, accepting rested %u "
			 "times", w->fd_pauses);
	npd_log(NPD_LOG_WARN, "worker %d: no accept() has failed for want of a descriptor for "
		"%d s: %u connections were refused in %lld.%03lld s without them%s", w->id,
		FD_SHORT_QUIET_MS / 1000, w->fd_refused, (long long)(ms / 1000),
		(long long)(ms % 1000), rested);
}

/* Disarm (events 0) or rearm the worker's listeners. */
static void arm_listeners(struct npd_worker *w, bool on)
{
	for (size_t i = 0; i < w->nsocks; i++) {
		npd_watch_mod(&w->loop, w->socks[i].fd, on ? EPOLLIN : 0, &w->socks[i].watch);
	}
}

/*
 * Without a spare descriptor, a connection cannot be shed, and the
 * level-triggered listener would wake the loop at once, for ever: rest the
 * listeners for a while. Connections wait in the queue meanwhile.
 */
static void pause_accepting(struct npd_worker *w)
{
	if (w->accept_paused_until)
		return;
	arm_listeners(w, false);
	w->accept_paused_until = w->loop.now_ms + ACCEPT_PAUSE_MS;
	w->fd_pauses++;
}

static void resume_accepting(struct npd_worker *w)
{
	take_spare(w);
	arm_listeners(w, true);
	w->accept_paused_until = 0;
}

enum shed { SHED_ONE, SHED_NONE_WAITING, SHED_NO_SPARE };

/*
 * At the file descriptor limit accept() fails and the connection stays in
 * the queue, so a level-triggered listener would wake us again at once. Give
 * up the spare descriptor, take the connection, close it, and take the
 * spare back: the peer sees a close, the loop does not spin.
 */
static enum shed shed_one(struct npd_worker *w, const struct npd_lsock *ls, int err)
{
	int fd = -1, accept_err = 0;

	pthread_mutex_lock(&fd_lock);
	if (w->reserve_fd >= 0) {
		close(w->reserve_fd);
		fd = accept4(ls->fd, NULL, NULL, SOCK_CLOEXEC);
		accept_err = errno;
		if (fd >= 0)
			close(fd);
		w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	pthread_mutex_unlock(&fd_lock);
	if (fd < 0) {
		/*
		 * accept() takes the descriptor before it looks at the queue, so it
		 * fails at the limit even when nothing waits: only a connection
		 * taken here is one dropped. Without a spare, or with its slot taken
		 * before our accept() could use it, nothing can be shed for now.
		 */
		if (w->reserve_fd < 0 || accept_err == EMFILE || accept_err == ENFILE)
			return SHED_NO_SPARE;
		return SHED_NONE_WAITING; /* nothing waits, or it went away (ECONNABORTED) */
	}
	w->fd_refused++;
	npd_stats_rejected(&w->stats, NPD_REJECT_NO_DESCRIPTORS);
	npd_worker_log_reject(w, "connection on %s dropped: %s",
			      w->gen->cfg->listeners[ls->listener].addr_text, strerror(err));
	return SHED_ONE;
}

static void accept_some(struct npd_worker *w, const struct npd_lsock *ls)
{
	const struct npd_config *cfg = w->gen->cfg;
	const struct npd_listener *l = &cfg->listeners[ls->listener];

	for (int i = 0; i < ACCEPTS_PER_TURN; i++) {
		union npd_sockaddr peer;
		socklen_t len = sizeof(peer);
		int fd = accept_locked(w, ls->fd, &peer, &len);

		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE) {
				int err = errno;
				fd_short_begin(w, l, err);
				switch (shed_one(w, ls, err)) {
				case SHED_ONE:
					continue;
				case SHED_NONE_WAITING:
					return;
				case SHED_NO_SPARE:
					pause_accepting(w);
					return;
				}
			}
			npd_worker_log_reject(w, "accept on %s: %s", l->addr_text, strerror(errno));
			return;
		}
		char text[NPD_SOCKADDR_TEXT];
		/* Checked before a single byte is read: an untrusted peer could claim any address. */
		if (!npd_config_trusts(cfg, &peer.sa)) {
			close(fd);
			npd_stats_rejected(&w->stats, NPD_REJECT_UNTRUSTED);
			npd_worker_log_reject(w, "rejected peer=%s port=%u: untrusted sender (not in proxy_trusted_proxies)",
					      npd_sockaddr_text(&peer, text, sizeof(text)), (unsigned)l->port);
			continue;
		}
		if (w->conns.n >= w->max_conns)
			npd_conns_shed(&w->conns, npd_connection_limit(cfg, (int)w->nworkers));
		if (w->conns.n >= w->max_conns) {
			close(fd);
			npd_stats_rejected(&w->stats, NPD_REJECT_LIMIT);
			npd_worker_log_reject(w, "rejected peer=%s port=%u: the connection limit (%zu) "
						 "is reached, none of them waiting for its header",
					      npd_sockaddr_text(&peer, text, sizeof(text)), (unsigned)l->port,
					      npd_connection_limit(cfg, (int)w->nworkers));
			continue;
		}
		if (!npd_conn_open(&w->conns, w->gen, ls->listener, fd, &peer))
			npd_worker_log_reject(w, "connection dropped: out of memory");
	}
}

/* The mailbox's eventfd: main has an update, a drain or a stop for us. */
static void on_wake(void *obj, uint32_t events)
{
	struct npd_worker *w = obj;

	(void)events;
	if (take_mail(w))
		w->loop.stopped = true;
}

static void on_listener(void *obj, uint32_t events)
{
	struct npd_lsock *ls = obj;
	struct npd_worker *w = ls->w;

	(void)events;
	/* After a switch, this turn's listener events may be stale; level
	 * triggering reports the live ones again. */
	if (!w->socks_changed && !w->accept_paused_until)
		accept_some(w, ls);
}

int npd_worker_timeout(struct npd_worker *w)
{
	if (!npd_list_empty(&w->loop.ready))
		return 0;
	int64_t first = npd_loop_first_deadline(&w->loop);
	/* Rejections left out of the log are counted in a line once the limit allows. */
	if (w->reject_suppressed && (first < 0 || w->reject_log_until - 9000 < first))
		first = w->reject_log_until - 9000;
	if (w->accept_paused_until && (first < 0 || w->accept_paused_until < first))
		first = w->accept_paused_until;
	if (w->fd_short && (first < 0 || w->fd_short_last + FD_SHORT_QUIET_MS < first))
		first = w->fd_short_last + FD_SHORT_QUIET_MS;
	if (w->draining && (first < 0 || w->drain_until < first))
		first = w->drain_until;
	if (first < 0)
		return -1;
	int64_t wait = first - npd_now_ms();
	return wait < 0 ? 0 : wait > 60000 ? 60000 : (int)wait;
}

bool npd_worker_expire(struct npd_worker *w)
{
	return npd_loop_expire(&w->loop, NPD_EXPIRIES_PER_TURN);
}

static void bury(struct npd_worker *w)
{
	/* Descriptors were freed: the first goes to the spare, if it was lost. */
	if (npd_conns_bury(&w->conns))
		take_spare(w);
}

static void shut_down(struct npd_worker *w)
{
	if (!w->draining) /* stopped before the drain began: all its connections count */
		w->drain_relayed = w->conns.n;
	npd_conns_close_all(&w->conns);
	w->drain_unheaded = w->conns.cut_unheaded;
	w->drain_cut = w->conns.cut;
	bury(w);
	/* Updates never applied: applying them closes what each one left out. */
	take_mail(w);
	for (size_t i = 0; i < w->nsocks; i++)
		close(w->socks[i].fd);
	free(w->socks);
	free(w->old_socks);
	w->socks = w->old_socks = NULL;
	w->nsocks = 0;
	npd_conns_free(&w->conns);
	npd_buf_pool_free(&w->bufs);
	if (w->gen)
		npd_gen_release(w->gen);
	w->gen = NULL;

	npd_loop_free(&w->loop);
	if (w->reserve_fd >= 0)
		close(w->reserve_fd);
	if (w->fd_short)
		atomic_fetch_sub(&fd_short_workers, 1);
}

static void *worker_main(void *arg)
{
	struct npd_worker *w = arg;
	struct epoll_event evs[MAX_EVENTS];

	w->loop.now_ms = npd_now_ms();
	npd_log_batch(true);
	for (;;) {
		/* This turn's lines, before sleeping: a line waits at most one turn. */
		npd_log_flush();
		int n = epoll_wait(w->loop.epfd, evs, MAX_EVENTS, npd_worker_timeout(w));
		if (n < 0 && errno != EINTR) {
			npd_log(NPD_LOG_ERROR, "worker %d: epoll_wait: %s", w->id, strerror(errno));
			break;
		}
		w->loop.now_ms = npd_now_ms();
		w->loop.turn++;
		/* Each watch's callback; the mailbox's may end the loop (loop.stopped). */
		npd_loop_dispatch(&w->loop, evs, n < 0 ? 0 : n);
		if (w->loop.stopped)
			goto out;
		npd_loop_run_ready(&w->loop);
		npd_worker_expire(w);
		bury(w);
		if (w->reject_suppressed && w->loop.now_ms >= w->reject_log_until - 9000) {
			npd_log(NPD_LOG_WARN, "%u more rejections not logged", w->reject_suppressed);
			w->reject_suppressed = 0;
		}
		if (w->accept_paused_until && w->loop.now_ms >= w->accept_paused_until)
			resume_accepting(w);
		if (w->fd_short && w->loop.now_ms - w->fd_short_last >= FD_SHORT_QUIET_MS)
			fd_short_end(w);
		free(w->old_socks);
		w->old_socks = NULL;
		w->socks_changed = false;
		if (w->draining) {
			atomic_store(&w->drain_left, w->conns.n);
			if (w->conns.n == 0 || w->loop.now_ms >= w->drain_until)
				break;
		}
	}
out:
	shut_down(w);
	npd_log_batch(false);
	atomic_store(&w->done, true);
	if (npd_worker_ended)
		npd_worker_ended();
	return NULL;
}

int npd_worker_start(struct npd_worker *w)
{
	return pthread_create(&w->thread, NULL, worker_main, w);
}

void npd_worker_join(struct npd_worker *w)
{
	pthread_join(w->thread, NULL);
	pthread_mutex_destroy(&w->lock);
	close(w->wakefd); /* here, not by the thread: main may still wake a worker that ended */
}
