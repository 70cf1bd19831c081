/*
 * preload.c - libnetproxy_preload.so: the PROXY protocol for unmodified,
 * dynamically linked servers.
 *
 *   LD_PRELOAD=libnetproxy_preload.so NETPROXY_PORTS=15222,15269 server
 *
 * On the listed ports a PROXY header is required; the shim reads it when a
 * connection is accepted, and accept(), accept4() and getpeername() report
 * the client it names (getsockname() the original destination with
 * NETPROXY_DST=1). Other ports are not touched.
 *
 * A silent or slow sender never holds up the server. A connection whose
 * header is not complete at accept time is parked; accept() goes on to the
 * next one (or says EAGAIN on a non-blocking listener). A watcher thread
 * reads the parked headers as they arrive, edge-triggered, and when one is
 * complete it connects to the listener itself and sends WAKE_MAGIC: that
 * wake-up connection makes the listener readable, so an event loop calls
 * accept() again, and a blocked accept() returns. Every accept() hands over
 * the ready connections first, before it takes anything from the kernel, so
 * one wake-up that waits in the backlog keeps the listener readable while
 * any number of them wait; accept() drops it (it knows it by what it says,
 * so a wake-up that lands in another process sharing the listener is
 * dropped there too) once none is left. Headers that do not complete in
 * NETPROXY_TIMEOUT_MS, and ready connections nobody takes in that time, are
 * closed.
 *
 * Processes that share a listener (pre-forked workers, nginx's) cannot say
 * which of them a wake-up reaches: the kernel may give every one to the same
 * idle worker. So a listener made in this process tree (listen() is wrapped)
 * gets a mailbox, a datagram socketpair its children inherit: a connection
 * whose header came late is passed into it (SCM_RIGHTS) with its addresses,
 * and whichever process accepts next takes it out and hands it over. How
 * many a mailbox holds is a counter in memory the processes share, so that
 * accept() knows without a system call whether to look there. A client of
 * a family its socket cannot report (IPv6 on an IPv4 socket, IPv4 on an
 * IPv6-only one) goes the same way to the process's listener of its family
 * on that port, when there is one.
 *
 * Nothing is allocated per connection: the state of each descriptor lives in
 * a table sized from RLIMIT_NOFILE and mapped lazily. close(), dup2(), dup3()
 * and listen() are wrapped to keep it true; an accepted connection's entry
 * also records its real peer, so a descriptor closed behind the shim's back
 * (by libc's own close, say) and reused never reports a stale address.
 *
 * This file holds the calls the shim exports (preload.map lists them) and its
 * start; the parts they use are in the files shim.h lists, each below the
 * ones that use it.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
	env_resolve();
	if (!env_read() || !table_init() || !header_init())
		return;
	pthread_atfork(watcher_before_fork, watcher_after_fork_parent, watcher_after_fork_child);
	conf.active = true;
	env_announce();
}

static inline void ensure_init(void)
{
	pthread_once(&once, init);
}

EXPORT int listen(int fd, int backlog)
{
	ensure_init();
	int r = real.listen(fd, backlog);
	uint32_t ls;
	/* A new listener, perhaps on a number a listener had before: read it afresh. */
	if (r == 0 && conf.active && proxy_listener(fd, true, &ls))
		mailbox_for_listener(fd);
	return r;
}

/* --- accept ------------------------------------------------------------- */

static void fill_addr(const void *src, socklen_t srclen, struct sockaddr *addr, socklen_t *addrlen)
{
	if (!addr || !addrlen)
		return;
	memcpy(addr, src, *addrlen < srclen ? *addrlen : srclen);
	*addrlen = srclen;
}

/*
 * Hand fd, the caller's (FD_TAKEN), over with the flags the caller asked for
 * and the address it should see.
 */
static int deliver(int fd, struct fd_entry *e, int flags, struct sockaddr *addr,
		   socklen_t *addrlen)
{
	struct claim c;

	/*
	 * A connection accepted in this call already has the caller's flags; one
	 * parked by an earlier call, or passed through a mailbox, may not.
	 * (Sockets have no other file status flag that F_SETFL could change.)
	 */
	if ((e->flags ^ flags) & SOCK_NONBLOCK)
		fcntl(fd, F_SETFL, flags & SOCK_NONBLOCK ? O_NONBLOCK : 0);
	if ((e->flags ^ flags) & SOCK_CLOEXEC)
		fcntl(fd, F_SETFD, flags & SOCK_CLOEXEC ? FD_CLOEXEC : 0);
	entry_claim(e, &c);
	if (c.client.len) {
		fill_addr(&c.client.sa, c.client.len, addr, addrlen);
	} else if (addr && addrlen) {
		/* LOCAL, UNKNOWN, UNSPEC: the connection's real peer. */
		real.getpeername(fd, addr, addrlen);
	}
	entry_publish(e, FD_PROXIED);
	return fd;
}

/*
 * Close fd, refused or dropped, unless the server closed it meanwhile (a
 * close() of a descriptor it was never given).
 */
static void refuse(int fd, struct fd_entry *e)
{
	if (!e || entry_publish(e, FD_UNKNOWN))
		real.close(fd);
}

static int do_accept(int lfd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	uint32_t ls;
	struct fd_entry *l = conf.active ? proxy_listener(lfd, false, &ls) : NULL;

	if (!l)
		return real.accept4(lfd, addr, addrlen, flags);
	/* The listener's socket: connections queued for another on its number are not its. */
	uint64_t lcookie = atomic_load_explicit(&l->cookie, memory_order_relaxed);
	for (;;) {
		/*
		 * Connections whose header came after their accept go first, from
		 * this process's queue, then from the mailbox: so a wake-up waiting
		 * in the backlog keeps the listener readable until none is left, and
		 * a thread that blocks in the kernel never leaves one behind.
		 */
		int fd = -1;
		if (atomic_load_explicit(&queue.queued, memory_order_relaxed) > 0) {
			pthread_mutex_lock(&shim_lock);
			fd = pop_ready(lfd, lcookie);
			pthread_mutex_unlock(&shim_lock);
		}
		if (fd < 0 && mail_waits(l))
			fd = take_mail(lfd);
		if (fd >= 0)
			return deliver(fd, entry(fd), flags, addr, addrlen);

		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		/*
		 * Blocks on a blocking listener, as the caller expects; a wake-up ends
		 * it. The caller's own flags: the shim's reads say MSG_DONTWAIT, so
		 * a blocking socket is no obstacle, and nothing needs changing after.
		 */
		fd = real.accept4(lfd, (struct sockaddr *)&peer, &plen, flags);
		if (fd < 0) {
			int err = errno;
			/* Before saying EAGAIN: a late connection passed in meanwhile? */
			if ((err == EAGAIN || err == EWOULDBLOCK) && mail_waits(l) &&
			    (fd = take_mail(lfd)) >= 0)
				return deliver(fd, entry(fd), flags, addr, addrlen);
			errno = err;
			return -1;
		}

		struct fd_entry *e = entry(fd);
		struct claim c;
		const char *why = NULL;
		int r = -1;
		if (e) {
			struct addr p = {.len = plen < sizeof(p.sa) ? plen : sizeof(p.sa)};
			memcpy(&p.sa, &peer, p.len);
			entry_take(fd, e);
			e->flags = flags;
			slot_put(&e->peer, &p);
		}
		if (!e)
			why = "beyond the shim's descriptor table (raise RLIMIT_NOFILE before start)";
		else if (!is_trusted((struct sockaddr *)&peer))
			why = "untrusted sender (not in NETPROXY_TRUSTED)";
		else
			r = try_header(fd, &c, false, false, &why);
		if (r == 1 && !other_family(&c, peer.ss_family, ls & ST_V6ONLY)) {
			in_family(&c, peer.ss_family);
			entry_set_claim(e, &c);
			return deliver(fd, e, flags, addr, addrlen);
		}
		if (r == 1) {
			/* Its client is of a family this listener cannot report. */
			pthread_mutex_lock(&shim_lock);
			int to = route(&c, lfd, peer.ss_family, &why);
			if (to >= 0 && to != lfd && start_watcher()) {
				/* Kept out of programs the server may exec while it waits. */
				if (!(e->flags & SOCK_CLOEXEC) && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0)
					e->flags |= SOCK_CLOEXEC;
				entry_set_claim(e, &c);
				bool posted = make_ready(fd, e, to);
				if (!posted) {
					enqueue(fd);
					if (!entry_publish(e, FD_READY))
						dequeue(fd); /* closed by the server meanwhile */
				}
				poke(); /* for the wake-up */
				pthread_mutex_unlock(&shim_lock);
				say_routed(fd, to, &c);
				if (posted)
					debug("fd %d: passed to the mailbox of fd %d", fd, to);
				continue;
			}
			pthread_mutex_unlock(&shim_lock);
			if (to == lfd) {
				entry_set_claim(e, &c);
				return deliver(fd, e, flags, addr, addrlen);
			}
			if (to >= 0)
				why = "cannot watch it for its header";
		}
		if (r == 2) { /* a wake-up: what it announces is queued here or in the mailbox */
			refuse(fd, e);
			if ((fd = take_mail(lfd)) >= 0) {
				/*
				 * Taken before this call looked at the count (a thread
				 * blocked in the kernel), or with more behind it: another
				 * wake-up keeps the listener readable for them.
				 */
				if (mail_waits(l))
					ask_wake(lfd);
				return deliver(fd, entry(fd), flags, addr, addrlen);
			}
			continue;
		}
		if (r == 0) {
			pthread_mutex_lock(&shim_lock);
			enum parked parked = park(fd, e, lfd, lcookie);
			pthread_mutex_unlock(&shim_lock);
			if (parked == PARKED)
				debug("fd %d: header incomplete, parked", fd);
			if (parked != NOT_PARKED)
				continue;
			why = "cannot watch it for its header";
		}
		/* Refused: it never reaches the server, which goes on to the next one. */
		debug("connection on fd %d refused: %s", lfd, why);
		refuse(fd, e);
	}
}

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	ensure_init();
	return do_accept(fd, addr, addrlen, flags);
}

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	ensure_init();
	if (!conf.active)
		return real.accept(fd, addr, addrlen);
	return do_accept(fd, addr, addrlen, 0);
}

EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	struct claim c;

	ensure_init();
	if (conf.active && proxied_claim(fd, &c)) {
		fill_addr(&c.client.sa, c.client.len, addr, addrlen);
		return 0;
	}
	return real.getpeername(fd, addr, addrlen);
}

EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	struct claim c;

	ensure_init();
	if (conf.active && conf.report_dst && proxied_claim(fd, &c)) {
		fill_addr(&c.dst.sa, c.dst.len, addr, addrlen);
		return 0;
	}
	return real.getsockname(fd, addr, addrlen);
}

/* --- close, dup2, dup3 ---------------------------------------------------- */

/*
 * fd is about to be closed (may_defer) or replaced (dup2, dup3): the entry
 * forgets it. Lock-free and async-signal-safe, as close() and dup2() are:
 * a word changed by compare-and-swap, perhaps a poke of the watcher, which
 * tidies the rest under the lock (the queue of a closed listener, its
 * mailbox). False when the close is left to the watcher, which holds the fd
 * (ST_BUSY) and closes it when it is done; a replacement waits for it instead.
 */
static bool let_go(int fd, bool may_defer)
{
	struct fd_entry *e = conf.active ? entry(fd) : NULL;
	uint32_t s = e ? state_of(e) : 0;

	while (e && st_kind(s) != FD_UNKNOWN) {
		if (!st_queued(s)) {
			/* A listener, or a connection given (or about to be given) to the server. */
			bool listener = st_kind(s) == FD_LISTENER;
			if (state_change(e, &s, FD_UNKNOWN)) {
				if (listener)
					poke(); /* its queued connections and its mailbox go */
				break;
			}
		} else if (s & ST_ORPHAN) {
			break; /* closed before: the number is someone else's now */
		} else if (!(s & ST_BUSY)) {
			/* Not the server's to close, but it did: the queue lets go of it. */
			if (state_change(e, &s, s | ST_ORPHAN)) {
				poke();
				break;
			}
		} else if (may_defer) {
			if (state_change(e, &s, s | ST_CLOSE))
				return false;
		} else {
			/* The watcher makes a few non-blocking calls on it, then lets go. */
			sched_yield();
			s = state_of(e);
		}
	}
	return true;
}

/*
 * These three are async-signal-safe once the shim has started (at the first
 * call of any of its functions): they take no lock.
 */
EXPORT int close(int fd)
{
	ensure_init();
	if (!let_go(fd, true))
		return 0;
	return real.close(fd);
}

EXPORT int dup2(int oldfd, int newfd)
{
	ensure_init();
	if (oldfd != newfd)
		let_go(newfd, false);
	return real.dup2(oldfd, newfd);
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
	ensure_init();
	if (oldfd != newfd)
		let_go(newfd, false);
	return real.dup3(oldfd, newfd, flags);
}
