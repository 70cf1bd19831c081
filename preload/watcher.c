/*
 * watcher.c - the watcher thread and the life of a queued connection: parking
 * one whose header is not complete, reading it as it arrives (epoll,
 * edge-triggered), making it ready for its listener or passing it to the
 * listener's mailbox, wake-ups that make the listener readable, the deadlines
 * that close what nobody completed or took; and what fork() does to all of
 * that. It uses mailbox.c, header.c, table.c and env.c; its state is under
 * the shim's lock.
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

static int epfd = -1;	/* the watcher's, over parked fds */
static int pokefd = -1; /* an eventfd in epfd: a new deadline to wait for */
static bool watcher_running;

/*
 * Listeners to wake once the lock is let go: a wake-up connects, and a
 * connect may wait (a full backlog), which must not hold up accept() or
 * close() in the server's threads. One per listener per round, so that a
 * crowd of ready connections does not fill the backlog with wake-ups.
 */
static int to_wake[MAX_MAILBOXES];
static size_t nto_wake;

/* A parked fd is no longer to be watched. Lock held. */
void unwatch(int fd)
{
	epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
}

/* Close a queued fd for good. Lock held. */
void drop_queued(int fd, const char *why)
{
	struct fd_entry *e = entry(fd);

	if (e->kind == FD_PARKED)
		unwatch(fd);
	dequeue(fd);
	debug("fd %d closed: %s", fd, why);
	forget(e);
	real.close(fd);
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

/*
 * fd's header is read: it is ready for listener lfd, in its mailbox when it
 * has one and takes it, else in this process's queue, and the watcher is to
 * wake lfd (the queue's wake_ms, the mailbox's wake_wanted). fd is queued.
 * Lock held.
 */
void make_ready(int fd, struct fd_entry *e, int lfd)
{
	e->kind = FD_READY;
	e->listener = lfd;
	e->wake_ms = 0; /* at once */
	/* A new window, to be accepted in: the header may have used most of the last. */
	e->deadline_ms = now_ms() + conf.timeout_ms;
	struct mailbox *m = mailbox_of(lfd);
	if (m && post(fd, e)) {
		debug("fd %d: passed to the mailbox of fd %d", fd, lfd);
		m->wake_wanted = true;
	}
}

static int family_of(int fd)
{
	int family = 0;
	socklen_t len = sizeof(family);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) != 0)
		return AF_UNSPEC;
	return family;
}

/* A parked fd has news (or its time is up): read its header if it is complete. Lock held. */
static void service_parked(int fd, bool fin)
{
	struct fd_entry *e = entry(fd);
	const char *why = NULL;

	if (!e || e->kind != FD_PARKED)
		return;
	int r = try_header(fd, e, fin, &why);
	if (r == 0)
		return;
	if (r != 1) {
		int lfd = e->listener;
		drop_queued(fd, why ? why : "a wake-up, dropped");
		/* A wake-up that kept no listener readable: another, if mail waits. */
		struct mailbox *m = r == 2 ? mailbox_of(lfd) : NULL;
		if (m && atomic_load_explicit(&m->count->waiting, memory_order_relaxed) > 0)
			m->wake_wanted = true;
		return;
	}
	debug("fd %d: header read after the accept", fd);
	unwatch(fd);
	int to = route(fd, e, e->listener, family_of(fd), &why);
	if (to < 0)
		drop_queued(fd, why);
	else
		make_ready(fd, e, to);
}

/* Expire, and wake listeners for ready connections. Returns ms to the next event, or -1. */
static int tick(int64_t now)
{
	int64_t next = -1;

	for (int fd = queue.head, after; fd >= 0; fd = after) {
		struct fd_entry *e = &table[fd];
		after = e->next;
		if (e->deadline_ms <= now) {
			drop_queued(fd, e->kind == FD_PARKED ? "its header did not arrive in time"
							      : "the server did not accept it in time");
			continue;
		}
		int64_t due = e->deadline_ms;
		if (e->kind == FD_READY) {
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
		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == pokefd) {
				uint64_t v;
				ssize_t r = read(pokefd, &v, sizeof(v));
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

void poke(void)
{
	uint64_t one = 1;
	ssize_t r = write(pokefd, &one, sizeof(one));
	(void)r;
}

void watcher_after_fork_child(void)
{
	/*
	 * The watcher did not come along and the epoll instance is the parent's.
	 * The queued connections are the parent's too: this process lets go of
	 * its copies, so that only the parent hands them over.
	 */
	for (int fd = queue.head, next; fd >= 0; fd = next) {
		next = table[fd].next;
		forget(&table[fd]);
		real.close(fd);
	}
	queue.head = -1;
	atomic_store(&queue.queued, 0);
	if (epfd >= 0)
		real.close(epfd);
	if (pokefd >= 0)
		real.close(pokefd);
	epfd = pokefd = -1;
	watcher_running = false;
	nto_wake = 0;
	mailboxes_after_fork();
	/*
	 * The locks taken before the fork are this thread's, the child's only
	 * one: let go of them (initialising a locked mutex again, as this did, is
	 * undefined, and ThreadSanitizer saw every later lock as a double lock).
	 */
	header_after_fork_child();
	pthread_mutex_unlock(&shim_lock);
}

void watcher_before_fork(void)
{
	pthread_mutex_lock(&shim_lock);
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
	pokefd = pk;
	watcher_running = true;
	return true;
}

/* Called with the lock held. Returns false when fd cannot be watched. */
bool park(int fd, struct fd_entry *e, int lfd, uint64_t cookie)
{
	if (!start_watcher())
		return false;
	/* Kept out of programs the server may exec while it waits here. */
	if (!(e->flags & SOCK_CLOEXEC) && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0)
		e->flags |= SOCK_CLOEXEC;
	e->kind = FD_PARKED;
	e->listener = lfd;
	e->deadline_ms = now_ms() + conf.timeout_ms;
	atomic_store_explicit(&e->cookie, cookie, memory_order_release);
	enqueue(fd);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = fd};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		dequeue(fd);
		forget(e);
		return false;
	}
	poke(); /* the watcher may be waiting with no deadline: give it this one */
	return true;
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
