/*
 * header.c - reading a connection's PROXY header with libnetproxy, without
 * waiting and without taking a byte of what follows it, and the addresses it
 * names as a socket of either family reports them. It owns the buffer for
 * headers longer than the stack's. It uses table.c and env.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "shim.h"

/*
 * Buffers of max_header bytes, when that is over STACK_HEADER: one for the
 * server's threads, one at a time, and one for the watcher alone, which never
 * waits for a lock while it holds a descriptor ST_BUSY (see shim.h).
 */
static uint8_t *big, *big_watcher;
static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;

/* Map the buffers for long headers when NETPROXY_MAX_HEADER asks for them. */
bool header_init(void)
{
	if (conf.max_header > STACK_HEADER) {
		/* Only the pages a header has used are backed. */
		void *b = mmap(NULL, 2 * conf.max_header, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (b == MAP_FAILED) {
			fprintf(stderr, "netproxy_preload: cannot map header buffers of %zu bytes: %s\n",
				conf.max_header, strerror(errno));
			return false;
		}
		big = b;
		big_watcher = big + conf.max_header;
	}
	return true;
}

void header_before_fork(void)
{
	pthread_mutex_lock(&big_lock);
}

void header_after_fork_parent(void)
{
	pthread_mutex_unlock(&big_lock);
}

void header_after_fork_child(void)
{
	pthread_mutex_unlock(&big_lock);
}

/* An address of the header, in its own family. */
static void store_addr(const struct np_header *h, const struct np_endpoint *ep, struct addr *out)
{
	struct sockaddr_storage ss;

	np_endpoint_to_sockaddr(h, ep, &ss);
	memset(out, 0, sizeof(*out));
	if (h->family == NP_AF_INET) {
		memcpy(&out->sa, &ss, sizeof(struct sockaddr_in));
		out->len = sizeof(struct sockaddr_in);
	} else {
		memcpy(&out->sa, &ss, sizeof(struct sockaddr_in6));
		out->len = sizeof(struct sockaddr_in6);
	}
}

/* An IPv4 address as the kernel reports one on an IPv6 socket: v4-mapped. */
static void map_v4(struct addr *a)
{
	struct sockaddr_in in;

	if (a->sa.sin6_family != AF_INET)
		return;
	memcpy(&in, &a->sa, sizeof(in));
	memset(&a->sa, 0, sizeof(a->sa));
	a->sa.sin6_family = AF_INET6;
	a->sa.sin6_port = in.sin_port;
	a->sa.sin6_addr.s6_addr[10] = a->sa.sin6_addr.s6_addr[11] = 0xFF;
	memcpy(&a->sa.sin6_addr.s6_addr[12], &in.sin_addr, 4);
	a->len = sizeof(a->sa);
}

/*
 * The family of listener a connection with c's addresses needs, when it is
 * not that of the socket it came from (sock_family): AF_INET6 for an IPv6
 * client on an IPv4 socket, AF_INET for an IPv4 client on an IPv6-only one.
 * 0 when its own listener can report it.
 */
int other_family(const struct claim *c, int sock_family, bool v6only)
{
	if (!c->client.len || c->client.sa.sin6_family == sock_family)
		return 0;
	if (c->client.sa.sin6_family == AF_INET6)
		return AF_INET6;
	return v6only ? AF_INET : 0;
}

/* c's addresses as a socket of sock_family reports them: IPv4 as v4-mapped on IPv6. */
void in_family(struct claim *c, int sock_family)
{
	if (c->client.len && sock_family == AF_INET6) {
		map_v4(&c->client);
		map_v4(&c->dst);
	}
}

/*
 * Read fd's header if it is all there, without waiting and without taking a
 * byte of what follows it. Returns 1 when read (c filled: client.len 0 when
 * the header named no addresses), 0 when incomplete, 2 for a wake-up
 * connection, -1 when the connection must go (*why says why).
 * fin: the peer has closed, so an incomplete header will never complete.
 * watcher: the caller is the watcher, which has a long header's buffer of
 * its own.
 */
int try_header(int fd, struct claim *c, bool fin, bool watcher, const char **why)
{
	uint8_t stack_buf[STACK_HEADER], *buf = stack_buf;
	size_t cap = sizeof(stack_buf);
	struct np_header h;
	int ret = -1;

again:;
	ssize_t n = recv(fd, buf, cap, MSG_PEEK | MSG_DONTWAIT);
	if (n == 0) {
		*why = "closed before its header was complete";
		goto out;
	}
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			ret = 0;
		else
			*why = strerror(errno);
		goto out;
	}
	if ((size_t)n >= sizeof(WAKE_MAGIC) - 1 && memcmp(buf, WAKE_MAGIC, sizeof(WAKE_MAGIC) - 1) == 0) {
		ret = 2;
		goto out;
	}
	int r = np_parse_max(buf, (size_t)n, conf.max_header, &h);
	if (r == NP_EAGAIN && (size_t)n == cap && buf == stack_buf && cap < conf.max_header) {
		/*
		 * Longer than the stack's buffer, as NETPROXY_MAX_HEADER allows: the
		 * process's buffer of that size, one caller at a time. Such headers
		 * are rare, and a thread's stack may be too small for them.
		 */
		if (!watcher)
			pthread_mutex_lock(&big_lock);
		buf = watcher ? big_watcher : big;
		cap = conf.max_header;
		goto again;
	}
	if (r == NP_EAGAIN) {
		if (!fin)
			ret = 0;
		else
			*why = "closed before its header was complete";
		goto out;
	}
	if (r < 0) {
		*why = r == NP_ETOOBIG ? conf.too_big : np_strerror(r);
		goto out;
	}
	/* Only a stream's addresses are ones this TCP connection can stand for. */
	memset(c, 0, sizeof(*c));
	if (h.command == NP_CMD_PROXY && h.transport == NP_TRANSPORT_STREAM &&
	    (h.family == NP_AF_INET || h.family == NP_AF_INET6)) {
		store_addr(&h, &h.src, &c->client);
		store_addr(&h, &h.dst, &c->dst);
	}
	/* The bytes were peeked, so they are there: this takes exactly the header. */
	if (recv(fd, buf, (size_t)r, MSG_DONTWAIT) != r)
		*why = "the header could not be consumed";
	else
		ret = 1;
out:
	if (buf == big)
		pthread_mutex_unlock(&big_lock);
	return ret;
}
