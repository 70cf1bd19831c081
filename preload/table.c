/*
 * table.c - the descriptor table: what the shim knows of each descriptor,
 * one entry per possible descriptor number, and the queue of parked and ready
 * connections, threaded through their entries. It owns the shim's lock. It
 * uses env.c only.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "shim.h"

struct fd_entry *table;
size_t table_size;
struct shim_queue queue = {.head = -1};
pthread_mutex_t shim_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * Map the table, once SO_COOKIE is known to work. False, said on stderr,
 * when the shim must stay off.
 */
bool table_init(void)
{
	/* Sockets are told apart by SO_COOKIE (Linux 4.12): without it, stay out of the way. */
	int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool cookies = probe >= 0 && cookie_of(probe) != 0;
	if (probe >= 0)
		real.close(probe);
	if (!cookies) {
		fprintf(stderr, "netproxy_preload: SO_COOKIE is not available (Linux 4.12 or later "
				"is needed); the shim is off\n");
		return false;
	}

	/* One entry per possible descriptor; pages are only backed once touched. */
	struct rlimit rl;
	size_t size;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY)
		size = rl.rlim_max > TABLE_MAX ? TABLE_MAX : (size_t)rl.rlim_max;
	else
		size = TABLE_MAX;
	void *t = mmap(NULL, size * sizeof(struct fd_entry), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (t == MAP_FAILED) {
		fprintf(stderr, "netproxy_preload: cannot map the descriptor table: %s\n",
			strerror(errno));
		return false;
	}
	table = t;
	table_size = size;
	return true;
}

uint64_t cookie_of(int fd)
{
	uint64_t c = 0;
	socklen_t len = sizeof(c);

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &len) != 0)
		return 0;
	return c;
}

uint32_t state_of(struct fd_entry *e)
{
	return atomic_load_explicit(&e->state, memory_order_acquire);
}

/*
 * Make e's word say kind_bits, whatever it says now: for the holder of the
 * lock, while the wrappers of close() may add bits. Returns the new word.
 */
uint32_t state_set(struct fd_entry *e, uint32_t kind_bits)
{
	uint32_t s = atomic_load_explicit(&e->state, memory_order_relaxed);

	while (!atomic_compare_exchange_weak_explicit(&e->state, &s, st_next(s, kind_bits),
						      memory_order_acq_rel, memory_order_relaxed))
		;
	return st_next(s, kind_bits);
}

/*
 * Make e's word say kind_bits if it still says *from; else false, and *from
 * is what it says now.
 */
bool state_change(struct fd_entry *e, uint32_t *from, uint32_t kind_bits)
{
	uint32_t to = st_next(*from, kind_bits);

	if (!atomic_compare_exchange_strong_explicit(&e->state, from, to, memory_order_acq_rel,
						     memory_order_acquire))
		return false;
	*from = to;
	return true;
}

/*
 * An address into an entry's slot, in release stores: a reader that sees a
 * word of it sees the state word that came before (see struct fd_entry).
 */
void slot_put(struct addr_slot *slot, const struct addr *a)
{
	uint64_t w[4];

	memcpy(w, a, sizeof(w));
	for (int i = 0; i < 4; i++)
		atomic_store_explicit(&slot->w[i], w[i], memory_order_release);
}

void slot_get(struct addr_slot *slot, struct addr *a)
{
	uint64_t w[4];

	for (int i = 0; i < 4; i++)
		w[i] = atomic_load_explicit(&slot->w[i], memory_order_acquire);
	memcpy(a, w, sizeof(w));
}

void entry_set_claim(struct fd_entry *e, const struct claim *c)
{
	slot_put(&e->client, &c->client);
	slot_put(&e->dst, &c->dst);
}

void entry_claim(struct fd_entry *e, struct claim *c)
{
	slot_get(&e->client, &c->client);
	slot_get(&e->dst, &c->dst);
}

/* Take fd off the queue, whatever it is now, making no system call on it. Lock held. */
void forget_queued(int fd)
{
	dequeue(fd);
	state_set(&table[fd], FD_UNKNOWN);
}

/*
 * fd came from the kernel just now (accept(), recvmsg()): what its entry
 * says is of a descriptor that had the number before. The caller takes it:
 * off the queue first if it was queued (closed by the server, or behind the
 * shim's back), then FD_TAKEN, before anything else in it is written. It may
 * take the lock.
 */
void entry_take(int fd, struct fd_entry *e)
{
	uint32_t s = state_of(e);

	if (st_queued(s)) {
		pthread_mutex_lock(&shim_lock);
		if (st_queued(state_of(e)))
			forget_queued(fd);
		pthread_mutex_unlock(&shim_lock);
		s = state_of(e);
	}
	while (!state_change(e, &s, FD_TAKEN))
		;
}

/*
 * The caller lets go of an entry it took, as kind. False when the server
 * closed the descriptor meanwhile (a close() of one it was never given): the
 * entry is then left as that made it, and the caller makes no more system
 * calls on the number.
 */
bool entry_publish(struct fd_entry *e, uint32_t kind)
{
	uint32_t s = atomic_load_explicit(&e->state, memory_order_relaxed);

	while (st_kind(s) == FD_TAKEN)
		if (state_change(e, &s, kind))
			return true;
	return false;
}

/*
 * The addresses fd's header named, when fd is still the connection the shim
 * handed over with them (the same real peer). Takes no lock: a signal
 * handler may call it.
 */
bool proxied_claim(int fd, struct claim *c)
{
	struct fd_entry *e = entry(fd);
	struct sockaddr_storage now;
	socklen_t len = sizeof(now);
	struct addr peer;

	if (!e)
		return false;
	uint32_t s = state_of(e);
	if (st_kind(s) != FD_PROXIED)
		return false;
	slot_get(&e->peer, &peer);
	entry_claim(e, c);
	/* Changed meanwhile: closed, and perhaps another connection's now. */
	if (atomic_load_explicit(&e->state, memory_order_relaxed) != s || c->client.len == 0)
		return false;
	return real.getpeername(fd, (struct sockaddr *)&now, &len) == 0 && len == peer.len &&
	       memcmp(&now, &peer.sa, len) == 0;
}

/*
 * Is lfd a listener on a PROXY port? Cached per socket; *state is the entry's
 * word when it is. fresh: lfd was made to listen just now, so what the entry
 * says is read afresh.
 */
struct fd_entry *proxy_listener(int lfd, bool fresh, uint32_t *state)
{
	struct fd_entry *e = entry(lfd);

	if (!e)
		return NULL;
	uint32_t s = state_of(e);
	/*
	 * Known listeners are taken at their word: close(), dup2(), dup3() and
	 * listen() are wrapped and forget or re-read the entry, so no syscall
	 * per accept() is spent on checking it.
	 */
	if (!fresh && st_kind(s) == FD_LISTENER) {
		*state = s;
		return e;
	}
	if (!fresh && st_kind(s) == FD_PLAIN)
		return NULL;
	/* A queued descriptor closed behind the shim's back: it stays the queue's. */
	if (!fresh && st_queued(s) && !(s & ST_ORPHAN))
		return NULL;
	uint64_t cookie = cookie_of(lfd);
	if (!cookie)
		return NULL;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	uint16_t port = 0;
	if (real.getsockname(lfd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET)
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	bool proxy = is_proxy_port(port);
	int v6only = 0;
	socklen_t olen = sizeof(v6only);
	if (proxy && ss.ss_family == AF_INET6 &&
	    getsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &olen) != 0)
		v6only = 0;
	pthread_mutex_lock(&shim_lock);
	/* Queued, and the server closed it; or listening now, so not the queued one. */
	if (st_queued(state_of(e)))
		forget_queued(lfd);
	atomic_store_explicit(&e->cookie, cookie, memory_order_relaxed);
	atomic_store_explicit(&e->mail, NULL, memory_order_relaxed);
	s = state_set(e, (proxy ? FD_LISTENER : FD_PLAIN) | (v6only ? ST_V6ONLY : 0));
	pthread_mutex_unlock(&shim_lock);
	if (!proxy)
		return NULL;
	debug("fd %d listens on PROXY port %u", lfd, port);
	*state = s;
	return e;
}

/* Whether lfd is still the PROXY listener whose cookie this is. */
bool listener_is(int lfd, uint64_t cookie)
{
	struct fd_entry *l = entry(lfd);

	return l && st_kind(state_of(l)) == FD_LISTENER &&
	       atomic_load_explicit(&l->cookie, memory_order_relaxed) == cookie;
}

/* Take fd off the queue (it is on it). Lock held. */
void dequeue(int fd)
{
	for (int *p = &queue.head; *p >= 0; p = &table[*p].next) {
		if (*p == fd) {
			*p = table[fd].next;
			table[fd].next = -1;
			atomic_fetch_sub_explicit(&queue.queued, 1, memory_order_relaxed);
			return;
		}
	}
}

/* Put fd at the end of the queue. Lock held. */
void enqueue(int fd)
{
	int *p = &queue.head;

	while (*p >= 0)
		p = &table[*p].next;
	table[fd].next = -1;
	*p = fd;
	atomic_fetch_add_explicit(&queue.queued, 1, memory_order_relaxed);
}

/*
 * The oldest ready connection of listener lfd, the socket whose cookie is
 * lcookie, taken off the queue (FD_TAKEN), or -1. Ones the server closed
 * meanwhile are let go of on the way. Lock held.
 */
int pop_ready(int lfd, uint64_t lcookie)
{
	for (int fd = queue.head, next; fd >= 0; fd = next) {
		struct fd_entry *e = &table[fd];
		uint32_t s = state_of(e);
		next = e->next;
		if (st_kind(s) != FD_READY || e->listener != lfd || e->lcookie != lcookie)
			continue;
		/* Only ST_ORPHAN can come meanwhile: ST_BUSY is the watcher's, under the lock. */
		while (!(s & ST_ORPHAN) && !state_change(e, &s, FD_TAKEN))
			;
		if (s & ST_ORPHAN) {
			forget_queued(fd);
			continue;
		}
		dequeue(fd);
		return fd;
	}
	return -1;
}
