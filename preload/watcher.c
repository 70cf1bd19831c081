/*
 * watcher.c - the watcher thread and the life of a queued connection: parking
 * one whose header is not complete, reading it as it arrives (epoll,
 * edge-triggered), making it ready for its listener or passing it to the
 * listener's mailbox, wake-ups that make the listener readable, the deadlines
 * that close what nobody completed or took; and what fork() does to all of
 * that. It uses mailbox.c, header.c, table.c and env.c; its state is under
 * the shim's lock.
 *
 * The watcher makes system calls on a queued descriptor only while it holds
 * it ST_BUSY, and then makes nothing but non-blocking calls on it, writes no
 * debug line and waits for no lock, so that a dup2() over it in a signal
 * handler, which waits for the watcher to be done, never waits long. Its
 * close of one comes just after it lets go of it (drop()).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/time.h>
#include <unistd.h>

#include "shim.h"

static int epfd = -1;		     /* the watcher's, over parked fds */
static atomic_int pokefd = -1;	     /* an eventfd in epfd: a new deadline to wait for */
static bool watcher_running;

/*
 * Listeners to wake once the lock is let go: a wake-up connects, and a
 * connect may wait (a full backlog), which must not hold up accept() or
 * close() in the server's threads. One per listener per round, so that a
 * crowd of ready connections does not fill the backlog with wake-ups.
 */
static int to_wake[MAX_MAILBOXES];
static size_t nto_wake;

/*
 * Hold a queued fd ST_BUSY, for system calls on it: false when the server
 * closed it (ST_ORPHAN), and the shim must make none. The watcher only, with
 * the lock.
 */
static bool hold(struct fd_entry *e)
{
	uint32_t s = state_of(e);

	while (!(s & ST_ORPHAN))
		if (state_change(e, &s, st_kind(s) | ST_BUSY))
			return true;
	return false;
}

/*
 * Close a queued fd for good, held ST_BUSY or the caller's (FD_TAKEN): off
 * the queue, then the entry says so, then the close, which a close() by the
 * server while it was held asked for too (ST_CLOSE). The entry is let go of
 * first: once the number is closed, whatever gets it next may be closed by
 * the server, and that close must not be taken for one of this fd's and left
 * to the watcher. Lock held.
 */
static void drop(int fd, struct fd_entry *e)
{
	if (st_kind(state_of(e)) == FD_PARKED)
		epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
	if (st_queued(state_of(e)))
		dequeue(fd);
	state_set(e, FD_UNKNOWN);
	real.close(fd);
}

/*
 * Let go of a fd held ST_BUSY, as kind, on the queue; or close it, when the
 * server closed it meanwhile (ST_CLOSE). Lock held.
 */
static void let_be(int fd, struct fd_entry *e, uint32_t kind)
{
	uint32_t s = state_of(e);

	while (!(s & ST_CLOSE))
		if (state_change(e, &s, kind))
			return;
	drop(fd, e);
}

/* A fd held ST_BUSY is now of kind, still held. Lock held. */
static void rekind(struct fd_entry *e, uint32_t kind)
{
	uint32_t s = state_of(e);

	while (!state_change(e, &s, kind | (s & (ST_BUSY | ST_CLOSE))))
		;
}

/* A queued fd the server closed: off the queue, with no system call on it. Lock held. */
static void let_go_orphan(int fd)
{
	forget_queued(fd);
}

/*
 * Make the listener readable: connect to it and say WAKE_MAGIC. accept()
 * drops such a connection and hands over a ready one instead. Called from
 * the watcher, which may take the time: a connect over loopback is instant.
 */
static void wake(int lfd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (real.getsockname(lfd, (struct sockaddr *)&ss, &len) != 0)
		return;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		if (in->sin_addr.s_addr == htonl(INADDR_ANY))
			in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
			in6->sin6_addr = in6addr_loopback;
	} else {
		return;
	}
	int w = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (w < 0)
		return;
	struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
	setsockopt(w, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(w, (struct sockaddr *)&ss, len) == 0) {
		ssize_t n = send(w, WAKE_MAGIC, sizeof(WAKE_MAGIC) - 1, MSG_NOSIGNAL);
		(void)n;
	}
	real.close(w); /* what was sent stays readable for the accepting side */
}

static void want_wake(int lfd)
{
	for (size_t i = 0; i < nto_wake; i++)
		if (to_wake[i] == lfd)
			return;
	if (nto_wake < MAX_MAILBOXES)
		to_wake[nto_wake++] = lfd;
}

/* Send the wake-ups wanted. Called without the lock. */
static void send_wakes(void)
{
	int lfds[MAX_MAILBOXES];

	pthread_mutex_lock(&shim_lock);
	size_t n = nto_wake;
	memcpy(lfds, to_wake, n * sizeof(int));
	nto_wake = 0;
	pthread_mutex_unlock(&shim_lock);
	for (size_t i = 0; i < n; i++)
		wake(lfds[i]);
}

static int family_of(int fd)
{
	int family = 0;
	socklen_t len = sizeof(family);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) != 0)
		return AF_UNSPEC;
	return family;
}

/*
 * fd's header is read (its addresses in its entry, as listener lfd reports
 * them): it is ready for lfd. Into lfd's mailbox when lfd has one and it
 * takes it: true, and fd is closed here, the copy in flight living on. Else
 * false, and the caller queues it FD_READY: the watcher is to wake lfd (the
 * entry's wake_ms, the mailbox's wake_wanted). fd is held ST_BUSY or is the
 * caller's (FD_TAKEN). Lock held.
 */
bool make_ready(int fd, struct fd_entry *e, int lfd)
{
	e->listener = lfd;
	e->lcookie = atomic_load_explicit(&entry(lfd)->cookie, memory_order_relaxed);
	e->wake_ms = 0; /* at once */
	/* A new window, to be accepted in: the header may have used most of the last. */
	e->deadline_ms = now_ms() + conf.timeout_ms;
	struct mailbox *m = mailbox_of(lfd);
	if (!m || !post(m, fd, e))
		return false;
	m->wake_wanted = true;
	drop(fd, e);
	return true;
}

/* A parked fd has news (or its time is up): read its header if it is complete. Lock held. */
static void service_parked(int fd, bool fin)
{
	struct fd_entry *e = entry(fd);
	const char *why = NULL;
	struct claim c;

	if (!e || st_kind(state_of(e)) != FD_PARKED)
		return;
	if (!hold(e)) {
		let_go_orphan(fd);
		return;
	}
	int r = try_header(fd, &c, fin, true, &why);
	if (r == 0) {
		let_be(fd, e, FD_PARKED);
		return;
	}
	int lfd = e->listener;
	if (r != 1) {
		drop(fd, e);
		debug("fd %d closed: %s", fd, why ? why : "a wake-up, dropped");
		/* A wake-up that kept no listener readable: another, if mail waits. */
		struct mailbox *m = r == 2 ? mailbox_of(lfd) : NULL;
		if (m && atomic_load_explicit(&m->count->waiting, memory_order_relaxed) > 0)
			m->wake_wanted = true;
		return;
	}
	epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
	rekind(e, FD_READY);
	int to = route(&c, lfd, family_of(fd), &why);
	bool posted = false;
	if (to >= 0) {
		entry_set_claim(e, &c);
		posted = make_ready(fd, e, to);
		if (!posted)
			let_be(fd, e, FD_READY);
	} else {
		drop(fd, e);
	}
	/* The lines, now that the fd is no longer held. */
	debug("fd %d: header read after the accept", fd);
	if (to < 0)
		debug("fd %d closed: %s", fd, why);
	else if (to != lfd)
		say_routed(fd, to, &c);
	if (posted)
		debug("fd %d: passed to the mailbox of fd %d", fd, to);
}

/* Expire, and wake listeners for ready connections. Returns ms to the next event, or -1. */
static int tick(int64_t now)
{
	int64_t next = -1;

	mailboxes_sweep(false);
	for (int fd = queue.head, after; fd >= 0; fd = after) {
		struct fd_entry *e = &table[fd];
		uint32_t s = state_of(e);
		after = e->next;
		const char *why = NULL;
		if (s & ST_ORPHAN)
			let_go_orphan(fd);
		else if (!listener_is(e->listener, e->lcookie))
			why = "its listener was closed";
		else if (e->deadline_ms <= now)
			why = st_kind(s) == FD_PARKED ? "its header did not arrive in time"
						      : "the server did not accept it in time";
		if (why && hold(e)) {
			drop(fd, e);
			debug("fd %d closed: %s", fd, why);
		} else if (why) {
			let_go_orphan(fd);
		}
		if (s & ST_ORPHAN || why)
			continue;
		int64_t due = e->deadline_ms;
		if (st_kind(s) == FD_READY) {
			if (e->wake_ms <= now) {
				want_wake(e->listener);
				e->wake_ms = now + WAKE_EVERY_MS;
			}
			if (e->wake_ms < due)
				due = e->wake_ms;
		}
		if (next < 0 || due < next)
			next = due;
	}
	for (size_t i = 0; i < mailbox_count(); i++) {
		struct mailbox *m = mailbox_at(i);
		if (m->wake_wanted) {
			/* An accept() took a wake-up and left mail: keep the listener readable. */
			m->wake_wanted = false;
			want_wake(m->lfd);
			m->woken_ms = now;
		}
		/* Mail nobody took: the wake-up may have gone astray; send another. */
		if (atomic_load_explicit(&m->count->waiting, memory_order_relaxed) <= 0 ||
		    !mail_waiting(m))
			continue;
		if (m->woken_ms + WAKE_EVERY_MS <= now) {
			want_wake(m->lfd);
			m->woken_ms = now;
		}
		if (next < 0 || m->woken_ms + WAKE_EVERY_MS < next)
			next = m->woken_ms + WAKE_EVERY_MS;
	}
	return next < 0 ? -1 : next <= now ? 0 : (int)(next - now);
}

static void *watcher(void *arg)
{
	(void)arg;
	for (;;) {
		struct epoll_event evs[64];

		pthread_mutex_lock(&shim_lock);
		int timeout = tick(now_ms());
		int fd = epfd;
		pthread_mutex_unlock(&shim_lock);
		send_wakes();

		int n = epoll_wait(fd, evs, 64, timeout);

		pthread_mutex_lock(&shim_lock);
		int pk = atomic_load_explicit(&pokefd, memory_order_relaxed);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == pk) {
				uint64_t v;
				ssize_t r = read(pk, &v, sizeof(v));
				(void)r;
				continue;
			}
			service_parked(evs[i].data.fd, (evs[i].events & (EPOLLRDHUP | EPOLLHUP)) != 0);
		}
		pthread_mutex_unlock(&shim_lock);
		send_wakes();
	}
	return NULL;
}

/*
 * Tell the watcher to look again: a new deadline, or a descriptor closed. No
 * lock: a signal handler may call it (write() is async-signal-safe).
 */
void poke(void)
{
	int fd = atomic_load_explicit(&pokefd, memory_order_relaxed);
	uint64_t one = 1;

	if (fd >= 0) {
		ssize_t r = write(fd, &one, sizeof(one));
		(void)r;
	}
}

void watcher_after_fork_child(void)
{
	/*
	 * The watcher did not come along and the epoll instance is the parent's.
	 * The queued connections are the parent's too: this process lets go of
	 * its copies, so that only the parent hands them over. (None is held
	 * ST_BUSY: the parent's watcher waits for the lock this thread holds.)
	 */
	for (int fd = queue.head, next; fd >= 0; fd = next) {
		next = table[fd].next;
		if (!(state_of(&table[fd]) & ST_ORPHAN))
			real.close(fd);
		forget_queued(fd);
	}
	if (epfd >= 0)
		real.close(epfd);
	int pk = atomic_exchange_explicit(&pokefd, -1, memory_order_relaxed);
	if (pk >= 0)
		real.close(pk);
	epfd = -1;
	watcher_running = false;
	nto_wake = 0;
	mailboxes_after_fork();
	/*
	 * The locks taken before the fork are this thread's, the child's only
	 * one: it lets go of them (initialising a locked mutex again would be
	 * undefined, and ThreadSanitizer sees every later lock as a double lock).
	 */
	header_after_fork_child();
	pthread_mutex_unlock(&shim_lock);
}

void watcher_before_fork(void)
{
	pthread_mutex_lock(&shim_lock);
	/* Listeners closed meanwhile: their mailboxes are not handed down. */
	mailboxes_sweep(false);
	header_before_fork();
}

void watcher_after_fork_parent(void)
{
	header_after_fork_parent();
	pthread_mutex_unlock(&shim_lock);
}

/*
 * Start the watcher if it is not running: its epoll instance, the eventfd
 * that tells it of a new deadline, and the thread, all or nothing. When a
 * step fails, what was made is closed and a debug line names the call; the
 * caller refuses what needed the watcher, and the next one tries afresh.
 * Lock held.
 */
bool start_watcher(void)
{
	if (watcher_running)
		return true;
	const char *failed = NULL;
	int err = 0, ep = epoll_create1(EPOLL_CLOEXEC), pk = -1;
	if (ep < 0) {
		failed = "epoll_create1";
		err = errno;
	} else if ((pk = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		failed = "eventfd";
		err = errno;
	} else {
		struct epoll_event pev = {.events = EPOLLIN, .data.fd = pk};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, pk, &pev) != 0) {
			failed = "epoll_ctl";
			err = errno;
		}
	}
	if (!failed) {
		pthread_t t;
		pthread_attr_t attr;
		/* Born with every signal blocked: signals are the server's business. */
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		int r = pthread_create(&t, &attr, watcher, NULL);
		pthread_attr_destroy(&attr);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (r != 0) {
			failed = "pthread_create";
			err = r;
		}
	}
	if (failed) {
		if (pk >= 0)
			real.close(pk);
		if (ep >= 0)
			real.close(ep);
		debug("the watcher cannot start: %s: %s", failed, strerror(err));
		return false;
	}
	/* The thread reads these under the lock, which this caller holds. */
	epfd = ep;
	atomic_store_explicit(&pokefd, pk, memory_order_relaxed);
	watcher_running = true;
	return true;
}

/*
 * Park fd, the caller's (FD_TAKEN), accepted on listener lfd (whose cookie is
 * lcookie) with its header incomplete, for the watcher. Lock held.
 */
enum parked park(int fd, struct fd_entry *e, int lfd, uint64_t lcookie)
{
	if (!start_watcher())
		return NOT_PARKED;
	/* Kept out of programs the server may exec while it waits here. */
	if (!(e->flags & SOCK_CLOEXEC) && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0)
		e->flags |= SOCK_CLOEXEC;
	e->listener = lfd;
	e->lcookie = lcookie;
	e->deadline_ms = now_ms() + conf.timeout_ms;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = fd};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
		return NOT_PARKED;
	enqueue(fd);
	if (!entry_publish(e, FD_PARKED)) {
		/* Closed by the server meanwhile (and so out of the epoll set). */
		dequeue(fd);
		return GONE;
	}
	poke(); /* the watcher may be waiting with no deadline: give it this one */
	return PARKED;
}

/* Ask the watcher for a wake-up for lfd, to keep it readable while mail waits. */
void ask_wake(int lfd)
{
	pthread_mutex_lock(&shim_lock);
	struct mailbox *m = mailbox_of(lfd);
	if (m && start_watcher()) {
		m->wake_wanted = true;
		poke();
	}
	pthread_mutex_unlock(&shim_lock);
}
