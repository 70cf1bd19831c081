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

/*
 * The entry of a connection the shim handed over with a client address, when
 * fd is still that connection (the same real peer), else NULL.
 */
struct fd_entry *proxied_entry(int fd)
{
	struct fd_entry *e = entry(fd);
	struct sockaddr_storage now;
	socklen_t len = sizeof(now);

	if (!e || atomic_load_explicit(&e->cookie, memory_order_acquire) == 0 ||
	    e->kind != FD_PROXIED || !e->has_client)
		return NULL;
	if (real.getpeername(fd, (struct sockaddr *)&now, &len) != 0 || len != e->peer_len ||
	    memcmp(&now, &e->peer, len) != 0)
		return NULL;
	return e;
}

/* Is lfd a listener on a PROXY port? Cached per socket. */
struct fd_entry *proxy_listener(int lfd)
{
	struct fd_entry *e = entry(lfd);

	/*
	 * Known listeners are taken at their word: close(), dup2(), dup3() and
	 * listen() are wrapped and forget or re-read the entry, so no syscall
	 * per accept() is spent on checking it.
	 */
	if (!e)
		return NULL;
	if (atomic_load_explicit(&e->cookie, memory_order_acquire) != 0) {
		if (e->kind == FD_LISTENER)
			return e;
		if (e->kind == FD_PLAIN)
			return NULL;
	}
	/* A queued descriptor closed behind the shim's back: it stays the queue's. */
	if (e->kind == FD_PARKED || e->kind == FD_READY)
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
	e->kind = proxy ? FD_LISTENER : FD_PLAIN;
	e->v6only = v6only != 0;
	e->next = e->listener = -1;
	atomic_store_explicit(&e->mail, NULL, memory_order_relaxed);
	atomic_store_explicit(&e->cookie, cookie, memory_order_release);
	pthread_mutex_unlock(&shim_lock);
	if (proxy)
		debug("fd %d listens on PROXY port %u", lfd, port);
	return proxy ? e : NULL;
}

void forget(struct fd_entry *e)
{
	atomic_store_explicit(&e->cookie, 0, memory_order_release);
	e->kind = FD_UNKNOWN;
	atomic_store_explicit(&e->mail, NULL, memory_order_relaxed);
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

/* The oldest ready connection of listener lfd, taken off the queue, or -1. Lock held. */
int pop_ready(int lfd)
{
	for (int fd = queue.head; fd >= 0; fd = table[fd].next) {
		if (table[fd].kind == FD_READY && table[fd].listener == lfd) {
			dequeue(fd);
			return fd;
		}
	}
	return -1;
}
