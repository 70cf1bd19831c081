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
 * complete it connects to the listener itself: that wake-up connection makes
 * the listener readable, so an event loop calls accept() again, where the
 * shim drops the wake-up and hands over the parked connection instead. A
 * blocked accept() returns the same way. Headers that do not complete in
 * NETPROXY_TIMEOUT_MS are closed.
 *
 * Nothing is allocated per connection: the state of each descriptor lives in
 * a table sized from RLIMIT_NOFILE and mapped lazily. Each entry records the
 * socket's SO_COOKIE, so a descriptor closed behind the shim's back (by
 * libc's own close, say) and reused can never report a stale address.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "netproxy.h"

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

#define EXPORT __attribute__((visibility("default")))
#define MAX_PORTS 64
#define MAX_TRUSTED 64
#define MAX_HEADER 4096 /* enough for any header a load balancer sends; larger is refused */
#define TABLE_MAX (1u << 22) /* entries; a larger RLIMIT_NOFILE is capped */

/* What the shim knows of one descriptor. */
enum fd_kind {
	FD_UNKNOWN = 0,
	FD_PLAIN,	   /* a listener that is not on a PROXY port */
	FD_LISTENER,	   /* a listener on a PROXY port */
	FD_PROXIED,	   /* an accepted connection whose header named the addresses */
	FD_PARKED,	   /* accepted, header incomplete, watched */
	FD_READY,	   /* header read, waiting on its listener's ready list */
};

/* A connection the shim made to one of the listeners, to wake up its accept(). */
struct wake {
	int fd, lfd;
	int64_t deadline_ms;
	struct sockaddr_storage local; /* its address: the peer accept() will see */
	socklen_t len;
};
#define MAX_WAKES 256

struct fd_entry {
	_Atomic uint64_t cookie; /* SO_COOKIE of the socket this entry describes; 0: none */
	uint8_t kind;
	bool has_client;  /* the header named the addresses; else the real ones apply */
	int listener;	  /* FD_PARKED, FD_READY: the listening fd it came from */
	int next;	  /* the next fd on the same list (parked, or a listener's ready), or -1 */
	int ready_head;	  /* FD_LISTENER: its first ready connection, or -1 */
	int64_t deadline_ms;
	struct sockaddr_in6 client, dst; /* big enough for AF_INET too */
	socklen_t client_len, dst_len;
};

static struct {
	pthread_once_t once;
	bool active;
	bool debug, report_dst;
	int timeout_ms;
	uint16_t ports[MAX_PORTS];
	size_t nports;
	struct {
		int family;
		uint8_t addr[16];
		int bits;
	} trusted[MAX_TRUSTED];
	size_t ntrusted;
	struct fd_entry *table;
	size_t table_size;
	pthread_mutex_t lock; /* the lists: parked, ready, and the watcher's state */
	int epfd;	      /* the watcher's, over parked fds */
	int pokefd;	      /* an eventfd in epfd: a new deadline to wait for */
	bool watcher_running;
	int parked_head;      /* all parked fds, through next */
	struct wake wakes[MAX_WAKES];
	size_t nwakes;
	int (*real_accept)(int, struct sockaddr *, socklen_t *);
	int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*real_getpeername)(int, struct sockaddr *, socklen_t *);
	int (*real_getsockname)(int, struct sockaddr *, socklen_t *);
	int (*real_close)(int);
} shim = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER, .epfd = -1,
	   .pokefd = -1, .parked_head = -1};

__attribute__((format(printf, 1, 2))) static void debug(const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!shim.debug)
		return;
	int n = snprintf(line, sizeof(line), "netproxy_preload[%d]: ", (int)getpid());
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- configuration ------------------------------------------------------- */

static bool parse_cidr(const char *text, size_t len)
{
	char buf[64];
	struct np_header h;
	char line[160];

	if (shim.ntrusted == MAX_TRUSTED || len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, text, len);
	buf[len] = '\0';
	char *slash = strchr(buf, '/');
	int bits = -1;
	if (slash) {
		*slash = '\0';
		char *end;
		long b = strtol(slash + 1, &end, 10);
		if (*end || slash[1] == '\0' || b < 0 || b > 128)
			return false;
		bits = (int)b;
	}
	/* The library's strict v1 grammar reads the address for us. */
	bool v6 = strchr(buf, ':') != NULL;
	snprintf(line, sizeof(line), "PROXY %s %s %s 0 0\r\n", v6 ? "TCP6" : "TCP4", buf, buf);
	if (np_parse(line, strlen(line), &h) <= 0)
		return false;
	if (bits < 0)
		bits = v6 ? 128 : 32;
	if (bits > (v6 ? 128 : 32))
		return false;
	shim.trusted[shim.ntrusted].family = v6 ? AF_INET6 : AF_INET;
	memcpy(shim.trusted[shim.ntrusted].addr, h.src.ip6, v6 ? 16 : 4);
	shim.trusted[shim.ntrusted].bits = bits;
	shim.ntrusted++;
	return true;
}

static bool parse_list(const char *name, const char *value, bool (*item)(const char *, size_t))
{
	for (const char *p = value; *p;) {
		size_t n = strcspn(p, ", ");
		if (n && !item(p, n)) {
			fprintf(stderr, "netproxy_preload: %s: cannot read '%.*s'; the shim is off\n", name,
				(int)n, p);
			return false;
		}
		p += n;
		p += strspn(p, ", ");
	}
	return true;
}

static bool parse_port(const char *text, size_t len)
{
	char buf[8];
	char *end;

	if (len >= sizeof(buf) || shim.nports == MAX_PORTS)
		return false;
	memcpy(buf, text, len);
	buf[len] = '\0';
	long p = strtol(buf, &end, 10);
	if (*end || p < 1 || p > 65535)
		return false;
	shim.ports[shim.nports++] = (uint16_t)p;
	return true;
}

static void *next_symbol(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);

	if (!f) {
		fprintf(stderr, "netproxy_preload: %s not found: %s\n", name, dlerror());
		abort();
	}
	return f;
}

static void init(void)
{
	shim.real_accept = next_symbol("accept");
	shim.real_accept4 = next_symbol("accept4");
	shim.real_getpeername = next_symbol("getpeername");
	shim.real_getsockname = next_symbol("getsockname");
	shim.real_close = next_symbol("close");

	const char *v = getenv("NETPROXY_DEBUG");
	shim.debug = v && *v && strcmp(v, "0") != 0;
	v = getenv("NETPROXY_DST");
	shim.report_dst = v && *v && strcmp(v, "0") != 0;
	v = getenv("NETPROXY_TIMEOUT_MS");
	shim.timeout_ms = v && *v ? atoi(v) : 5000;
	if (shim.timeout_ms <= 0)
		shim.timeout_ms = 5000;

	const char *ports = getenv("NETPROXY_PORTS");
	if (!ports || !*ports) {
		debug("NETPROXY_PORTS is not set: the shim does nothing");
		return;
	}
	const char *trusted = getenv("NETPROXY_TRUSTED");
	if (!trusted || !*trusted)
		trusted = "127.0.0.0/8,::1";
	if (!parse_list("NETPROXY_PORTS", ports, parse_port) ||
	    !parse_list("NETPROXY_TRUSTED", trusted, parse_cidr))
		return;

	/* One entry per possible descriptor; pages are only backed once touched. */
	struct rlimit rl;
	size_t size = 65536;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY)
		size = rl.rlim_max > TABLE_MAX ? TABLE_MAX : (size_t)rl.rlim_max;
	else
		size = TABLE_MAX;
	void *t = mmap(NULL, size * sizeof(struct fd_entry), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (t == MAP_FAILED) {
		fprintf(stderr, "netproxy_preload: cannot map the descriptor table: %s\n",
			strerror(errno));
		return;
	}
	shim.table = t;
	shim.table_size = size;
	shim.active = true;
	debug("PROXY ports: %s; trusted: %s; header timeout %d ms", ports, trusted, shim.timeout_ms);
}

static inline void ensure_init(void)
{
	pthread_once(&shim.once, init);
}

/* --- the descriptor table ----------------------------------------------- */

static uint64_t cookie_of(int fd)
{
	uint64_t c = 0;
	socklen_t len = sizeof(c);

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &len) != 0)
		return 0;
	return c;
}

static struct fd_entry *entry(int fd)
{
	if (fd < 0 || (size_t)fd >= shim.table_size)
		return NULL;
	return &shim.table[fd];
}

/* The entry for fd when it still describes the same socket, else NULL. */
static struct fd_entry *valid_entry(int fd, uint64_t *cookie)
{
	struct fd_entry *e = entry(fd);

	if (!e || atomic_load_explicit(&e->cookie, memory_order_acquire) == 0)
		return NULL;
	uint64_t c = cookie_of(fd);
	if (cookie)
		*cookie = c;
	return atomic_load_explicit(&e->cookie, memory_order_acquire) == c ? e : NULL;
}

static bool is_trusted(const struct sockaddr *sa)
{
	const uint8_t *addr;
	int family = sa->sa_family;

	if (family == AF_INET) {
		addr = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
	} else if (family == AF_INET6) {
		addr = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)addr)) {
			family = AF_INET;
			addr += 12;
		}
	} else {
		return family == AF_UNIX;
	}
	for (size_t i = 0; i < shim.ntrusted; i++) {
		if (shim.trusted[i].family != family)
			continue;
		int bits = shim.trusted[i].bits, full = bits / 8, rest = bits % 8;
		if (memcmp(addr, shim.trusted[i].addr, (size_t)full) != 0)
			continue;
		if (rest && ((addr[full] ^ shim.trusted[i].addr[full]) & (0xFF << (8 - rest))))
			continue;
		return true;
	}
	return false;
}

/* Is lfd a listener on a PROXY port? Cached per socket. */
static struct fd_entry *proxy_listener(int lfd)
{
	uint64_t cookie = 0;
	struct fd_entry *e = valid_entry(lfd, &cookie);

	if (e)
		return e->kind == FD_LISTENER ? e : NULL;
	if (!(e = entry(lfd)))
		return NULL;
	if (!cookie && !(cookie = cookie_of(lfd)))
		return NULL;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	uint16_t port = 0;
	if (shim.real_getsockname(lfd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET)
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	bool proxy = false;
	for (size_t i = 0; i < shim.nports && !proxy; i++)
		proxy = shim.ports[i] == port;
	pthread_mutex_lock(&shim.lock);
	e->kind = proxy ? FD_LISTENER : FD_PLAIN;
	e->next = e->listener = e->ready_head = -1;
	atomic_store_explicit(&e->cookie, cookie, memory_order_release);
	pthread_mutex_unlock(&shim.lock);
	if (proxy)
		debug("fd %d listens on PROXY port %u", lfd, port);
	return proxy ? e : NULL;
}

/* --- reading the header --------------------------------------------------- */

/* addr in the family the server's socket speaks: IPv4 as v4-mapped on an IPv6 socket. */
static void store_addr(const struct np_header *h, const struct np_endpoint *ep, int sock_family,
		       struct sockaddr_in6 *out, socklen_t *len)
{
	struct sockaddr_storage ss;

	np_endpoint_to_sockaddr(h, ep, &ss);
	memset(out, 0, sizeof(*out));
	if (h->family == NP_AF_INET && sock_family == AF_INET6) {
		out->sin6_family = AF_INET6;
		out->sin6_port = htons(ep->port);
		out->sin6_addr.s6_addr[10] = out->sin6_addr.s6_addr[11] = 0xFF;
		memcpy(&out->sin6_addr.s6_addr[12], ep->ip4, 4);
		*len = sizeof(struct sockaddr_in6);
	} else if (h->family == NP_AF_INET) {
		memcpy(out, &ss, sizeof(struct sockaddr_in));
		*len = sizeof(struct sockaddr_in);
	} else {
		memcpy(out, &ss, sizeof(struct sockaddr_in6));
		*len = sizeof(struct sockaddr_in6);
	}
}

/*
 * Read fd's header if it is all there, without waiting and without taking a
 * byte of what follows it. Returns 1 when read (e filled), 0 when incomplete,
 * -1 when the connection must go (*why says why).
 */
static int try_header(int fd, struct fd_entry *e, int sock_family, const char **why)
{
	uint8_t buf[MAX_HEADER];
	struct np_header h;
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);

	if (n == 0) {
		*why = "closed before its header was complete";
		return -1;
	}
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return 0;
		*why = strerror(errno);
		return -1;
	}
	int r = np_parse_max(buf, (size_t)n, sizeof(buf), &h);
	if (r == NP_EAGAIN)
		return 0;
	if (r < 0) {
		*why = np_strerror(r);
		return -1;
	}
	/* Only a stream's addresses are ones this TCP connection can stand for. */
	e->has_client = h.command == NP_CMD_PROXY && h.transport == NP_TRANSPORT_STREAM &&
			(h.family == NP_AF_INET || h.family == NP_AF_INET6);
	if (e->has_client) {
		store_addr(&h, &h.src, sock_family, &e->client, &e->client_len);
		store_addr(&h, &h.dst, sock_family, &e->dst, &e->dst_len);
	}
	/* The bytes were peeked, so they are there: this takes exactly the header. */
	if (recv(fd, buf, (size_t)r, MSG_DONTWAIT) != r) {
		*why = "the header could not be consumed";
		return -1;
	}
	return 1;
}

/* --- parked connections and the watcher ---------------------------------- */

static int family_of(int fd)
{
	int family = 0;
	socklen_t len = sizeof(family);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) != 0)
		return AF_UNSPEC;
	return family;
}

static void unlink_parked(int fd)
{
	for (int *p = &shim.parked_head; *p >= 0; p = &shim.table[*p].next) {
		if (*p == fd) {
			*p = shim.table[fd].next;
			shim.table[fd].next = -1;
			return;
		}
	}
}

static void forget(struct fd_entry *e)
{
	atomic_store_explicit(&e->cookie, 0, memory_order_release);
	e->kind = FD_UNKNOWN;
}

/*
 * Make the listener readable: connect to it. accept() recognises the
 * connection as a wake-up by its peer (the address of one of shim.wakes),
 * drops it and hands over a ready connection instead.
 */
static void wake(int lfd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (shim.nwakes == MAX_WAKES ||
	    shim.real_getsockname(lfd, (struct sockaddr *)&ss, &len) != 0)
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
	int w = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (w < 0)
		return;
	struct wake *k = &shim.wakes[shim.nwakes];
	k->len = sizeof(k->local);
	if ((connect(w, (struct sockaddr *)&ss, len) != 0 && errno != EINPROGRESS) ||
	    getsockname(w, (struct sockaddr *)&k->local, &k->len) != 0) {
		shim.real_close(w);
		return;
	}
	k->fd = w;
	k->lfd = lfd;
	k->deadline_ms = now_ms() + shim.timeout_ms;
	shim.nwakes++;
}

static void drop_wake(size_t i)
{
	shim.real_close(shim.wakes[i].fd);
	shim.wakes[i] = shim.wakes[--shim.nwakes];
}

static void make_ready(int fd, struct fd_entry *e)
{
	int lfd = e->listener;
	struct fd_entry *l = entry(lfd);

	e->kind = FD_READY;
	e->next = -1;
	int *tail = &l->ready_head;
	while (*tail >= 0)
		tail = &shim.table[*tail].next;
	*tail = fd;
	wake(lfd);
}

/* Called with the lock held: a parked fd has news, or its time is up. */
static void service_parked(int fd, bool expired)
{
	struct fd_entry *e = entry(fd);
	const char *why = "its header did not arrive in time";

	if (!e || e->kind != FD_PARKED)
		return;
	int r = expired ? -1 : try_header(fd, e, family_of(fd), &why);
	if (r == 0)
		return;
	epoll_ctl(shim.epfd, EPOLL_CTL_DEL, fd, NULL);
	unlink_parked(fd);
	if (r > 0) {
		debug("fd %d: header read after the accept", fd);
		make_ready(fd, e);
		return;
	}
	debug("fd %d closed: %s", fd, why);
	forget(e);
	shim.real_close(fd);
}

/* Milliseconds until the next parked header or wake-up expires; -1: none. Lock held. */
static int next_deadline(int64_t now)
{
	int64_t first = -1;

	for (int fd = shim.parked_head; fd >= 0; fd = shim.table[fd].next)
		if (first < 0 || shim.table[fd].deadline_ms < first)
			first = shim.table[fd].deadline_ms;
	for (size_t i = 0; i < shim.nwakes; i++)
		if (first < 0 || shim.wakes[i].deadline_ms < first)
			first = shim.wakes[i].deadline_ms;
	if (first < 0)
		return -1;
	return first <= now ? 0 : (int)(first - now);
}

static void *watcher(void *arg)
{
	(void)arg;
	for (;;) {
		struct epoll_event evs[64];

		pthread_mutex_lock(&shim.lock);
		int timeout = next_deadline(now_ms());
		int epfd = shim.epfd;
		pthread_mutex_unlock(&shim.lock);

		int n = epoll_wait(epfd, evs, 64, timeout);
		int64_t now = now_ms();

		pthread_mutex_lock(&shim.lock);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == shim.pokefd) {
				uint64_t v;
				ssize_t r = read(shim.pokefd, &v, sizeof(v));
				(void)r;
				continue;
			}
			service_parked(evs[i].data.fd, false);
		}
		for (int fd = shim.parked_head, next; fd >= 0; fd = next) {
			next = shim.table[fd].next;
			if (shim.table[fd].deadline_ms <= now)
				service_parked(fd, true);
		}
		/* A wake-up nobody accepted (the listener went away) is let go. */
		for (size_t i = 0; i < shim.nwakes;)
			if (shim.wakes[i].deadline_ms <= now)
				drop_wake(i);
			else
				i++;
		pthread_mutex_unlock(&shim.lock);
	}
	return NULL;
}

static void reset_after_fork(void)
{
	/* The watcher did not come along, and the epoll instance is the parent's. */
	shim.watcher_running = false;
	shim.epfd = shim.pokefd = -1;
	shim.parked_head = -1;
	shim.nwakes = 0;
	pthread_mutex_init(&shim.lock, NULL);
}

/* Called with the lock held. Returns false when fd cannot be watched. */
static bool park(int fd, struct fd_entry *e, int lfd, uint64_t cookie)
{
	if (!shim.watcher_running) {
		static bool atfork_set;
		pthread_t t;
		pthread_attr_t attr;

		if (!atfork_set) {
			pthread_atfork(NULL, NULL, reset_after_fork);
			atfork_set = true;
		}
		if (shim.epfd < 0) {
			shim.epfd = epoll_create1(EPOLL_CLOEXEC);
			shim.pokefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
			struct epoll_event pev = {.events = EPOLLIN, .data.fd = shim.pokefd};
			if (shim.epfd < 0 || shim.pokefd < 0 ||
			    epoll_ctl(shim.epfd, EPOLL_CTL_ADD, shim.pokefd, &pev) != 0)
				return false;
		}
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		int r = pthread_create(&t, &attr, watcher, NULL);
		pthread_attr_destroy(&attr);
		if (r != 0)
			return false;
		shim.watcher_running = true;
	}
	e->kind = FD_PARKED;
	e->listener = lfd;
	e->deadline_ms = now_ms() + shim.timeout_ms;
	e->next = shim.parked_head;
	shim.parked_head = fd;
	atomic_store_explicit(&e->cookie, cookie, memory_order_release);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = fd};
	if (epoll_ctl(shim.epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		unlink_parked(fd);
		forget(e);
		return false;
	}
	/* The watcher may be waiting with no deadline: give it this one. */
	uint64_t one = 1;
	ssize_t r = write(shim.pokefd, &one, sizeof(one));
	(void)r;
	return true;
}

/* --- accept ------------------------------------------------------------- */

static void fill_addr(const void *src, socklen_t srclen, struct sockaddr *addr, socklen_t *addrlen)
{
	if (!addr || !addrlen)
		return;
	memcpy(addr, src, *addrlen < srclen ? *addrlen : srclen);
	*addrlen = srclen;
}

/* Hand fd over with the flags the caller asked for and the address it should see. */
static int deliver(int fd, struct fd_entry *e, int flags, struct sockaddr *addr,
		   socklen_t *addrlen)
{
	/* The shim accepts with both flags; take back what the caller did not ask for. */
	if (!(flags & SOCK_NONBLOCK))
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	if (!(flags & SOCK_CLOEXEC))
		fcntl(fd, F_SETFD, 0);
	if (e->has_client) {
		fill_addr(&e->client, e->client_len, addr, addrlen);
	} else if (addr && addrlen) {
		/* LOCAL, UNKNOWN, UNSPEC: the connection's real peer. */
		shim.real_getpeername(fd, addr, addrlen);
	}
	e->kind = FD_PROXIED;
	return fd;
}

/* A ready connection of listener l, taken off its list, or -1. Lock held. */
static int pop_ready(struct fd_entry *l)
{
	int fd = l->ready_head;

	if (fd >= 0) {
		l->ready_head = shim.table[fd].next;
		shim.table[fd].next = -1;
	}
	return fd;
}

/* Is this accepted peer one of our wake-up connections? Then it is dropped. Lock held. */
static bool is_wake(int lfd, const struct sockaddr *peer, socklen_t len)
{
	for (size_t i = 0; i < shim.nwakes; i++) {
		struct wake *k = &shim.wakes[i];
		if (k->lfd == lfd && k->len == len && memcmp(&k->local, peer, len) == 0) {
			drop_wake(i);
			return true;
		}
	}
	return false;
}

static int do_accept(int lfd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	struct fd_entry *l = shim.active ? proxy_listener(lfd) : NULL;

	if (!l)
		return shim.real_accept4(lfd, addr, addrlen, flags);
	for (;;) {
		/* A connection whose header came after its accept goes first. */
		pthread_mutex_lock(&shim.lock);
		int fd = pop_ready(l);
		pthread_mutex_unlock(&shim.lock);
		if (fd >= 0)
			return deliver(fd, entry(fd), flags, addr, addrlen);

		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		/* Blocks on a blocking listener, as the caller expects; a wake-up ends it. */
		fd = shim.real_accept4(lfd, (struct sockaddr *)&peer, &plen,
				       flags | SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return -1; /* EAGAIN on a non-blocking listener included */

		pthread_mutex_lock(&shim.lock);
		bool woken = is_wake(lfd, (struct sockaddr *)&peer, plen);
		pthread_mutex_unlock(&shim.lock);
		if (woken) {
			shim.real_close(fd);
			continue;
		}
		struct fd_entry *e = entry(fd);
		uint64_t cookie = cookie_of(fd);
		const char *why = NULL;
		int r = -1;
		if (!e || !cookie)
			why = "beyond the shim's descriptor table";
		else if (!is_trusted((struct sockaddr *)&peer))
			why = "untrusted sender (not in NETPROXY_TRUSTED)";
		else
			r = try_header(fd, e, peer.ss_family, &why);
		if (r > 0) {
			atomic_store_explicit(&e->cookie, cookie, memory_order_release);
			return deliver(fd, e, flags, addr, addrlen);
		}
		if (r == 0) {
			pthread_mutex_lock(&shim.lock);
			bool parked = park(fd, e, lfd, cookie);
			pthread_mutex_unlock(&shim.lock);
			if (parked) {
				debug("fd %d: header incomplete, parked", fd);
				continue;
			}
			why = "cannot watch it for its header";
		}
		/* Refused: it never reaches the server, which goes on to the next one. */
		debug("connection on fd %d refused: %s", lfd, why);
		if (e)
			forget(e);
		shim.real_close(fd);
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
	if (!shim.active)
		return shim.real_accept(fd, addr, addrlen);
	return do_accept(fd, addr, addrlen, 0);
}

EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	ensure_init();
	struct fd_entry *e = shim.active ? valid_entry(fd, NULL) : NULL;
	if (e && e->kind == FD_PROXIED && e->has_client) {
		fill_addr(&e->client, e->client_len, addr, addrlen);
		return 0;
	}
	return shim.real_getpeername(fd, addr, addrlen);
}

EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	ensure_init();
	struct fd_entry *e = shim.active && shim.report_dst ? valid_entry(fd, NULL) : NULL;
	if (e && e->kind == FD_PROXIED && e->has_client) {
		fill_addr(&e->dst, e->dst_len, addr, addrlen);
		return 0;
	}
	return shim.real_getsockname(fd, addr, addrlen);
}

EXPORT int close(int fd)
{
	ensure_init();
	struct fd_entry *e = shim.active ? entry(fd) : NULL;
	if (e && atomic_load_explicit(&e->cookie, memory_order_acquire)) {
		pthread_mutex_lock(&shim.lock);
		if (e->kind == FD_LISTENER) {
			/* Its waiting connections can no longer be accepted. */
			for (int c; (c = pop_ready(e)) >= 0;) {
				forget(entry(c));
				shim.real_close(c);
			}
			for (int c = shim.parked_head, next; c >= 0; c = next) {
				next = shim.table[c].next;
				if (shim.table[c].listener == fd)
					service_parked(c, true);
			}
		}
		forget(e);
		pthread_mutex_unlock(&shim.lock);
	}
	return shim.real_close(fd);
}
