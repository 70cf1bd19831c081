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
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
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
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "netproxy.h"

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

#define EXPORT __attribute__((visibility("default")))
#define MAX_PORTS 64
#define MAX_TRUSTED 64
#define STACK_HEADER 4096 /* the default cap: headers up to this long are read on the stack */
#define TABLE_MAX (1u << 22) /* entries; a larger RLIMIT_NOFILE is capped */

/* What the shim knows of one descriptor. */
enum fd_kind {
	FD_UNKNOWN = 0,
	FD_PLAIN,    /* a listener that is not on a PROXY port */
	FD_LISTENER, /* a listener on a PROXY port */
	FD_PROXIED,  /* an accepted connection handed to the server */
	FD_PARKED,   /* accepted, header incomplete, watched */
	FD_READY,    /* header read, waiting for its listener's accept() */
};

/*
 * How many connections a mailbox holds, in memory shared by every process
 * that has the mailbox (MAP_SHARED, inherited across fork()). It is a hint,
 * read without the lock: counted up before a connection is sent into the
 * mailbox and down after each one is received, it may say one waits for the
 * moment one is in flight, never that none waits while one is there.
 * Counters come from pages of SLAB_SLOTS, handed out by a shared index and
 * never reused or unmapped, so that no process can see a counter change
 * meaning and a stale pointer still points to a counter: 64 bytes per
 * mailbox ever made.
 */
struct mail_count {
	_Alignas(64) atomic_int waiting;
};
#define SLAB_SLOTS 63
struct mail_slab {
	_Alignas(64) atomic_uint used;
	struct mail_count slot[SLAB_SLOTS];
};
_Static_assert(sizeof(struct mail_slab) <= 4096, "a slab fits in a page");

/* What a wake-up connection says; no PROXY header starts like this. */
static const char WAKE_MAGIC[] = "NETPROXY-PRELOAD-WAKE\n";
#define WAKE_EVERY_MS 100 /* while a ready connection waits */
#define MAX_MAILBOXES 64

struct fd_entry {
	_Atomic uint64_t cookie; /* 0: unused; a listener's SO_COOKIE; IN_USE for the rest */
	uint8_t kind;
	bool has_client;  /* the header named the addresses; else the real ones apply */
	bool v6only;	  /* FD_LISTENER: an IPv6 socket with IPV6_V6ONLY */
	int flags;	  /* the SOCK_NONBLOCK and SOCK_CLOEXEC it has now */
	int listener;	  /* FD_PARKED, FD_READY: the listening fd it came from */
	int next;	  /* FD_PARKED, FD_READY: the next queued fd, or -1 */
	int64_t deadline_ms;
	union {
		int64_t wake_ms; /* FD_READY: when to send the next wake-up */
		struct mail_count *_Atomic mail; /* FD_LISTENER: its mailbox's count, or NULL */
	};
	struct sockaddr_in6 client, dst; /* big enough for AF_INET too */
	socklen_t client_len, dst_len;
	struct sockaddr_in6 peer; /* the real peer, as accept() saw it: tells the socket apart */
	socklen_t peer_len;
};

/*
 * The cookie of an accepted connection's entry only says "in use": such an
 * entry is recognised by its real peer instead, which getpeername() reads
 * anyway, so accept() need not pay a getsockopt() for it.
 */
#define IN_USE 1

static struct {
	pthread_once_t once;
	bool active;
	bool debug, report_dst;
	int timeout_ms;
	size_t max_header;    /* NETPROXY_MAX_HEADER */
	char too_big[64];     /* the reason a header longer than that is refused */
	uint8_t *big;	      /* a buffer of max_header bytes, when that is over STACK_HEADER */
	pthread_mutex_t big_lock;
	uint16_t ports[MAX_PORTS];
	size_t nports;
	struct np_cidr trusted[MAX_TRUSTED];
	size_t ntrusted;
	bool anyone;	      /* NETPROXY_TRUSTED set and empty: every sender is trusted */
	struct fd_entry *table;
	size_t table_size;
	pthread_mutex_t lock; /* the queue and the watcher's state */
	int epfd;	      /* the watcher's, over parked fds */
	int pokefd;	      /* an eventfd in epfd: a new deadline to wait for */
	bool watcher_running;
	int queue_head;	      /* parked and ready fds, oldest first, through next */
	struct mailbox {
		int lfd;
		uint64_t cookie; /* the listener's */
		int fds[2];	 /* a datagram socketpair: [0] to receive, [1] to send */
		int64_t woken_ms; /* the last wake-up sent for it by this process */
		bool wake_wanted; /* accept() asks the watcher for a wake-up */
		struct mail_count *count;
		int family;	  /* the listener's */
		uint16_t port;
	} mailboxes[MAX_MAILBOXES];
	size_t nmailboxes;
	struct mail_slab *slab; /* where the next counter comes from */
	atomic_int queued;    /* how many: read without the lock by accept() */
	int (*real_accept)(int, struct sockaddr *, socklen_t *);
	int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*real_getpeername)(int, struct sockaddr *, socklen_t *);
	int (*real_getsockname)(int, struct sockaddr *, socklen_t *);
	int (*real_close)(int);
	int (*real_listen)(int, int);
	int (*real_dup2)(int, int);
	int (*real_dup3)(int, int, int);
} shim = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER,
	   .big_lock = PTHREAD_MUTEX_INITIALIZER, .epfd = -1, .pokefd = -1, .queue_head = -1};

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

/*
 * An entry of NETPROXY_TRUSTED, read by libnetproxy, as netproxyd reads
 * proxy_trusted_proxies. Returns 1 when read, 0 when it cannot be, -1 when
 * it was refused with a message of its own.
 */
static int parse_cidr(const char *text, size_t len)
{
	if (shim.ntrusted == MAX_TRUSTED)
		return 0;
	int r = np_cidr_parse(text, len, &shim.trusted[shim.ntrusted]);
	if (r == NP_EFAMILY) {
		/*
		 * Inside ::ffff:0:0/96: a v4-mapped peer is matched as the IPv4
		 * address it is, so no peer would ever match. Say what to write.
		 */
		char a[64], v4[INET_ADDRSTRLEN] = "?";
		struct in6_addr in6;
		size_t alen = strcspn(text, "/");
		alen = alen < len ? alen : len;
		unsigned prefix = alen < len ? (unsigned)atoi(text + alen + 1) : 128;
		if (alen < sizeof(a)) {
			memcpy(a, text, alen);
			a[alen] = '\0';
			if (inet_pton(AF_INET6, a, &in6) == 1) {
				uint32_t mask = prefix >= 128 ? 0xFFFFFFFFu : ~(0xFFFFFFFFu >> (prefix - 96));
				uint32_t host;
				memcpy(&host, &in6.s6_addr[12], 4);
				host = htonl(ntohl(host) & mask);
				inet_ntop(AF_INET, &host, v4, sizeof(v4));
			}
		}
		char block[16];
		snprintf(block, sizeof(block), "/%u", prefix - 96);
		fprintf(stderr, "netproxy_preload: NETPROXY_TRUSTED: '%.*s' is an IPv4-mapped block, "
				"which no sender matches (an IPv4 sender is matched as IPv4): write "
				"'%s%s'; the shim is off\n", (int)len, text, v4,
			prefix < 128 ? block : "");
		return -1;
	}
	if (r != 0)
		return 0;
	shim.ntrusted++;
	return 1;
}

/* A list separated by commas or spaces; false, said on stderr, when an item cannot be read. */
static bool parse_list(const char *name, const char *value, int (*item)(const char *, size_t))
{
	for (const char *p = value; *p;) {
		size_t n = strcspn(p, ", ");
		int r = n ? item(p, n) : 1;
		if (r == 0)
			fprintf(stderr, "netproxy_preload: %s: cannot read '%.*s'; the shim is off\n", name,
				(int)n, p);
		if (r <= 0)
			return false;
		p += n;
		p += strspn(p, ", ");
	}
	return true;
}

static int parse_port(const char *text, size_t len)
{
	char buf[8];
	char *end;

	if (len >= sizeof(buf) || shim.nports == MAX_PORTS)
		return 0;
	memcpy(buf, text, len);
	buf[len] = '\0';
	long p = strtol(buf, &end, 10);
	if (*end || p < 1 || p > 65535)
		return 0;
	shim.ports[shim.nports++] = (uint16_t)p;
	return 1;
}

static uint64_t cookie_of(int fd);

static void *next_symbol(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);

	if (!f) {
		fprintf(stderr, "netproxy_preload: %s not found: %s\n", name, dlerror());
		abort();
	}
	return f;
}

/* A whole number from lo to hi, or dflt when unset or empty; anything else is refused. */
static bool parse_number(const char *name, const char *unit, long lo, long hi, long dflt,
			 long *out)
{
	const char *v = getenv(name);
	char *end;

	*out = dflt;
	if (!v || !*v)
		return true;
	errno = 0;
	long n = strtol(v, &end, 10);
	if (*end || errno || n < lo || n > hi) {
		fprintf(stderr, "netproxy_preload: %s=%s: expected %s from %ld to %ld; the shim is off\n",
			name, v, unit, lo, hi);
		return false;
	}
	*out = n;
	return true;
}

/* A switch: unset, "" or "0" is off, "1" is on; anything else is refused. */
static bool parse_switch(const char *name, bool *out)
{
	const char *v = getenv(name);

	*out = v && strcmp(v, "1") == 0;
	if (!v || !*v || strcmp(v, "0") == 0 || strcmp(v, "1") == 0)
		return true;
	fprintf(stderr, "netproxy_preload: %s=%s: expected 0 or 1; the shim is off\n", name, v);
	return false;
}

static void before_fork(void);
static void after_fork_parent(void);
static void reset_after_fork(void);

static void init(void)
{
	shim.real_accept = next_symbol("accept");
	shim.real_accept4 = next_symbol("accept4");
	shim.real_getpeername = next_symbol("getpeername");
	shim.real_getsockname = next_symbol("getsockname");
	shim.real_close = next_symbol("close");
	shim.real_listen = next_symbol("listen");
	shim.real_dup2 = next_symbol("dup2");
	shim.real_dup3 = next_symbol("dup3");

	if (!parse_switch("NETPROXY_DEBUG", &shim.debug) ||
	    !parse_switch("NETPROXY_DST", &shim.report_dst))
		return;
	long ms, max;
	if (!parse_number("NETPROXY_TIMEOUT_MS", "milliseconds", 1, 3600000, 5000, &ms) ||
	    !parse_number("NETPROXY_MAX_HEADER", "bytes", NP_V2_MIN_LEN, NP_V2_MAX_LEN, STACK_HEADER,
			  &max))
		return;
	shim.timeout_ms = (int)ms;
	shim.max_header = (size_t)max;
	snprintf(shim.too_big, sizeof(shim.too_big), "header larger than NETPROXY_MAX_HEADER (%zu bytes)",
		 shim.max_header);

	const char *ports = getenv("NETPROXY_PORTS");
	if (!ports || !*ports) {
		debug("NETPROXY_PORTS is not set: the shim does nothing");
		return;
	}
	/* Unset: the host itself, as netproxyd's default. Set and empty: anyone. */
	const char *trusted = getenv("NETPROXY_TRUSTED");
	if (!trusted)
		trusted = "127.0.0.1,::1";
	if (!parse_list("NETPROXY_PORTS", ports, parse_port) ||
	    !parse_list("NETPROXY_TRUSTED", trusted, parse_cidr))
		return;
	shim.anyone = shim.ntrusted == 0;

	/* Sockets are told apart by SO_COOKIE (Linux 4.12): without it, stay out of the way. */
	int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool cookies = probe >= 0 && cookie_of(probe) != 0;
	if (probe >= 0)
		shim.real_close(probe);
	if (!cookies) {
		fprintf(stderr, "netproxy_preload: SO_COOKIE is not available (Linux 4.12 or later "
				"is needed); the shim is off\n");
		return;
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
		return;
	}
	shim.table = t;
	shim.table_size = size;
	if (shim.max_header > STACK_HEADER) {
		/* Only the pages a header has used are backed. */
		void *b = mmap(NULL, shim.max_header, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (b == MAP_FAILED) {
			fprintf(stderr, "netproxy_preload: cannot map a header buffer of %zu bytes: %s\n",
				shim.max_header, strerror(errno));
			return;
		}
		shim.big = b;
	}
	pthread_atfork(before_fork, after_fork_parent, reset_after_fork);
	shim.active = true;
	if (shim.anyone)
		fprintf(stderr, "netproxy_preload: WARNING: NETPROXY_TRUSTED is set and empty: ANY "
				"host can send PROXY headers and claim any address\n");
	debug("PROXY ports: %s; trusted: %s; header timeout %d ms; header up to %zu bytes", ports,
	      shim.anyone ? "anyone" : trusted, shim.timeout_ms, shim.max_header);
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

/*
 * The entry of a connection the shim handed over with a client address, when
 * fd is still that connection (the same real peer), else NULL.
 */
static struct fd_entry *proxied_entry(int fd)
{
	struct fd_entry *e = entry(fd);
	struct sockaddr_storage now;
	socklen_t len = sizeof(now);

	if (!e || atomic_load_explicit(&e->cookie, memory_order_acquire) == 0 ||
	    e->kind != FD_PROXIED || !e->has_client)
		return NULL;
	if (shim.real_getpeername(fd, (struct sockaddr *)&now, &len) != 0 || len != e->peer_len ||
	    memcmp(&now, &e->peer, len) != 0)
		return NULL;
	return e;
}

/* Whether the sender, the peer the kernel reports, may send a header. */
static bool is_trusted(const struct sockaddr *sa)
{
	if (shim.anyone)
		return true;
	for (size_t i = 0; i < shim.ntrusted; i++)
		if (np_cidr_match(&shim.trusted[i], sa))
			return true;
	return false;
}

/* Is lfd a listener on a PROXY port? Cached per socket. */
static struct fd_entry *proxy_listener(int lfd)
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
	if (shim.real_getsockname(lfd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET)
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	bool proxy = false;
	for (size_t i = 0; i < shim.nports && !proxy; i++)
		proxy = shim.ports[i] == port;
	int v6only = 0;
	socklen_t olen = sizeof(v6only);
	if (proxy && ss.ss_family == AF_INET6 &&
	    getsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &olen) != 0)
		v6only = 0;
	pthread_mutex_lock(&shim.lock);
	e->kind = proxy ? FD_LISTENER : FD_PLAIN;
	e->v6only = v6only != 0;
	e->next = e->listener = -1;
	atomic_store_explicit(&e->mail, NULL, memory_order_relaxed);
	atomic_store_explicit(&e->cookie, cookie, memory_order_release);
	pthread_mutex_unlock(&shim.lock);
	if (proxy)
		debug("fd %d listens on PROXY port %u", lfd, port);
	return proxy ? e : NULL;
}

/* --- reading the header --------------------------------------------------- */

/* An address of the header, in its own family. */
static void store_addr(const struct np_header *h, const struct np_endpoint *ep,
		       struct sockaddr_in6 *out, socklen_t *len)
{
	struct sockaddr_storage ss;

	np_endpoint_to_sockaddr(h, ep, &ss);
	memset(out, 0, sizeof(*out));
	if (h->family == NP_AF_INET) {
		memcpy(out, &ss, sizeof(struct sockaddr_in));
		*len = sizeof(struct sockaddr_in);
	} else {
		memcpy(out, &ss, sizeof(struct sockaddr_in6));
		*len = sizeof(struct sockaddr_in6);
	}
}

/* An IPv4 address as the kernel reports one on an IPv6 socket: v4-mapped. */
static void map_v4(struct sockaddr_in6 *sa, socklen_t *len)
{
	struct sockaddr_in in;

	if (sa->sin6_family != AF_INET)
		return;
	memcpy(&in, sa, sizeof(in));
	memset(sa, 0, sizeof(*sa));
	sa->sin6_family = AF_INET6;
	sa->sin6_port = in.sin_port;
	sa->sin6_addr.s6_addr[10] = sa->sin6_addr.s6_addr[11] = 0xFF;
	memcpy(&sa->sin6_addr.s6_addr[12], &in.sin_addr, 4);
	*len = sizeof(*sa);
}

/*
 * The family of listener a connection with e's addresses needs, when it is
 * not that of the socket it came from (sock_family): AF_INET6 for an IPv6
 * client on an IPv4 socket, AF_INET for an IPv4 client on an IPv6-only one.
 * 0 when its own listener can report it.
 */
static int other_family(const struct fd_entry *e, int sock_family, bool v6only)
{
	if (!e->has_client || e->client.sin6_family == sock_family)
		return 0;
	if (e->client.sin6_family == AF_INET6)
		return AF_INET6;
	return v6only ? AF_INET : 0;
}

/*
 * Read fd's header if it is all there, without waiting and without taking a
 * byte of what follows it. Returns 1 when read (e filled), 0 when incomplete,
 * 2 for a wake-up connection, -1 when the connection must go (*why says why).
 * fin: the peer has closed, so an incomplete header will never complete.
 */
static int try_header(int fd, struct fd_entry *e, bool fin, const char **why)
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
	int r = np_parse_max(buf, (size_t)n, shim.max_header, &h);
	if (r == NP_EAGAIN && (size_t)n == cap && buf == stack_buf && cap < shim.max_header) {
		/*
		 * Longer than the stack's buffer, as NETPROXY_MAX_HEADER allows: the
		 * process's buffer of that size, one caller at a time. Such headers
		 * are rare, and a thread's stack may be too small for them.
		 */
		pthread_mutex_lock(&shim.big_lock);
		buf = shim.big;
		cap = shim.max_header;
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
		*why = r == NP_ETOOBIG ? shim.too_big : np_strerror(r);
		goto out;
	}
	/* Only a stream's addresses are ones this TCP connection can stand for. */
	e->has_client = h.command == NP_CMD_PROXY && h.transport == NP_TRANSPORT_STREAM &&
			(h.family == NP_AF_INET || h.family == NP_AF_INET6);
	if (e->has_client) {
		store_addr(&h, &h.src, &e->client, &e->client_len);
		store_addr(&h, &h.dst, &e->dst, &e->dst_len);
	}
	/* The bytes were peeked, so they are there: this takes exactly the header. */
	if (recv(fd, buf, (size_t)r, MSG_DONTWAIT) != r)
		*why = "the header could not be consumed";
	else
		ret = 1;
out:
	if (buf != stack_buf)
		pthread_mutex_unlock(&shim.big_lock);
	return ret;
}

/* --- the queue of parked and ready connections, and the watcher ---------- */

static int family_of(int fd)
{
	int family = 0;
	socklen_t len = sizeof(family);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) != 0)
		return AF_UNSPEC;
	return family;
}

static void forget(struct fd_entry *e)
{
	atomic_store_explicit(&e->cookie, 0, memory_order_release);
	e->kind = FD_UNKNOWN;
	atomic_store_explicit(&e->mail, NULL, memory_order_relaxed);
}

/* Take fd off the queue (it is on it). Lock held. */
static void dequeue(int fd)
{
	for (int *p = &shim.queue_head; *p >= 0; p = &shim.table[*p].next) {
		if (*p == fd) {
			*p = shim.table[fd].next;
			shim.table[fd].next = -1;
			atomic_fetch_sub_explicit(&shim.queued, 1, memory_order_relaxed);
			return;
		}
	}
}

/* Put fd at the end of the queue. Lock held. */
static void enqueue(int fd)
{
	int *p = &shim.queue_head;

	while (*p >= 0)
		p = &shim.table[*p].next;
	shim.table[fd].next = -1;
	*p = fd;
	atomic_fetch_add_explicit(&shim.queued, 1, memory_order_relaxed);
}

/* Close a queued fd for good. Lock held. */
static void drop_queued(int fd, const char *why)
{
	struct fd_entry *e = entry(fd);

	if (e->kind == FD_PARKED)
		epoll_ctl(shim.epfd, EPOLL_CTL_DEL, fd, NULL);
	dequeue(fd);
	debug("fd %d closed: %s", fd, why);
	forget(e);
	shim.real_close(fd);
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

	if (shim.real_getsockname(lfd, (struct sockaddr *)&ss, &len) != 0)
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
	shim.real_close(w); /* what was sent stays readable for the accepting side */
}

static bool post(int fd, struct fd_entry *e);
static bool mail_waiting(const struct mailbox *m);
static void want_wake(int lfd);
static struct mailbox *mailbox_of(int lfd);

/* e's addresses as a socket of sock_family reports them: IPv4 as v4-mapped on IPv6. */
static void in_family(struct fd_entry *e, int sock_family)
{
	if (e->has_client && sock_family == AF_INET6) {
		map_v4(&e->client, &e->client_len);
		map_v4(&e->dst, &e->dst_len);
	}
}

/*
 * This process's listener of family fam on lfd's port, made to listen through
 * the shim (it has a mailbox, which is how it is found), or -1. Lock held.
 */
static int sibling(int lfd, int fam)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (shim.real_getsockname(lfd, (struct sockaddr *)&ss, &len) != 0 ||
	    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
		return -1;
	uint16_t port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						      : ((struct sockaddr_in6 *)&ss)->sin6_port);
	for (size_t i = 0; i < shim.nmailboxes; i++) {
		struct mailbox *m = &shim.mailboxes[i];
		if (m->lfd != lfd && m->family == fam && m->port == port && mailbox_of(m->lfd) == m)
			return m->lfd;
	}
	return -1;
}

/*
 * Which listener a connection read on lfd, a socket of sock_family, is for:
 * lfd itself, or, for a client of a family lfd cannot report, this process's
 * listener of the client's family on the same port, as the kernel would have
 * chosen had the client connected itself; its addresses are set as that
 * listener reports them. -1, *why set, when no listener can report it: an
 * IPv6 client and no IPv6 listener. (An IPv4 client on an IPv6-only listener
 * with no IPv4 one beside it is reported v4-mapped there.) Lock held.
 */
static int route(int fd, struct fd_entry *e, int lfd, int sock_family, const char **why)
{
	const struct fd_entry *l = entry(lfd);
	int fam = other_family(e, sock_family, l && l->v6only);

	if (fam) {
		int to = sibling(lfd, fam);
		if (to >= 0) {
			debug("fd %d: an IPv%c client, for fd %d, the IPv%c listener of its port", fd,
			      fam == AF_INET6 ? '6' : '4', to, fam == AF_INET6 ? '6' : '4');
			return to;
		}
		if (fam == AF_INET6) {
			/* The server expects an IPv4 address from an IPv4 socket, a sockaddr_in. */
			*why = "an IPv6 client cannot be reported on an IPv4 listener";
			return -1;
		}
	}
	in_family(e, sock_family);
	return lfd;
}

/*
 * fd's header is read: it is ready for listener lfd, in its mailbox when it
 * has one and takes it, else in this process's queue, and the watcher is to
 * wake lfd (the queue's wake_ms, the mailbox's wake_wanted). fd is queued.
 * Lock held.
 */
static void make_ready(int fd, struct fd_entry *e, int lfd)
{
	e->kind = FD_READY;
	e->listener = lfd;
	e->wake_ms = 0; /* at once */
	/* A new window, to be accepted in: the header may have used most of the last. */
	e->deadline_ms = now_ms() + shim.timeout_ms;
	struct mailbox *m = mailbox_of(lfd);
	if (m && post(fd, e)) {
		debug("fd %d: passed to the mailbox of fd %d", fd, lfd);
		m->wake_wanted = true;
	}
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
	epoll_ctl(shim.epfd, EPOLL_CTL_DEL, fd, NULL);
	int to = route(fd, e, e->listener, family_of(fd), &why);
	if (to < 0)
		drop_queued(fd, why);
	else
		make_ready(fd, e, to);
}

/* Expire, and wake listeners for ready connections. Returns ms to the next event, or -1. */
/*
 * Listeners to wake once the lock is let go: a wake-up connects, and a
 * connect may wait (a full backlog), which must not hold up accept() or
 * close() in the server's threads. One per listener per round, so that a
 * crowd of ready connections does not fill the backlog with wake-ups.
 */
static int to_wake[MAX_MAILBOXES];
static size_t nto_wake;

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

	pthread_mutex_lock(&shim.lock);
	size_t n = nto_wake;
	memcpy(lfds, to_wake, n * sizeof(int));
	nto_wake = 0;
	pthread_mutex_unlock(&shim.lock);
	for (size_t i = 0; i < n; i++)
		wake(lfds[i]);
}

static int tick(int64_t now)
{
	int64_t next = -1;

	for (int fd = shim.queue_head, after; fd >= 0; fd = after) {
		struct fd_entry *e = &shim.table[fd];
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
	for (size_t i = 0; i < shim.nmailboxes; i++) {
		struct mailbox *m = &shim.mailboxes[i];
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

		pthread_mutex_lock(&shim.lock);
		int timeout = tick(now_ms());
		int epfd = shim.epfd;
		pthread_mutex_unlock(&shim.lock);
		send_wakes();

		int n = epoll_wait(epfd, evs, 64, timeout);

		pthread_mutex_lock(&shim.lock);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == shim.pokefd) {
				uint64_t v;
				ssize_t r = read(shim.pokefd, &v, sizeof(v));
				(void)r;
				continue;
			}
			service_parked(evs[i].data.fd, (evs[i].events & (EPOLLRDHUP | EPOLLHUP)) != 0);
		}
		pthread_mutex_unlock(&shim.lock);
		send_wakes();
	}
	return NULL;
}

static void poke(void)
{
	uint64_t one = 1;
	ssize_t r = write(shim.pokefd, &one, sizeof(one));
	(void)r;
}

static void reset_after_fork(void)
{
	/*
	 * The watcher did not come along and the epoll instance is the parent's.
	 * The queued connections are the parent's too: this process lets go of
	 * its copies, so that only the parent hands them over.
	 */
	for (int fd = shim.queue_head, next; fd >= 0; fd = next) {
		next = shim.table[fd].next;
		forget(&shim.table[fd]);
		shim.real_close(fd);
	}
	shim.queue_head = -1;
	atomic_store(&shim.queued, 0);
	if (shim.epfd >= 0)
		shim.real_close(shim.epfd);
	if (shim.pokefd >= 0)
		shim.real_close(shim.pokefd);
	shim.epfd = shim.pokefd = -1;
	shim.watcher_running = false;
	nto_wake = 0;
	for (size_t i = 0; i < shim.nmailboxes; i++)
		shim.mailboxes[i].wake_wanted = false;
	pthread_mutex_init(&shim.lock, NULL);
	pthread_mutex_init(&shim.big_lock, NULL);
}

static void before_fork(void)
{
	pthread_mutex_lock(&shim.lock);
	pthread_mutex_lock(&shim.big_lock);
}

static void after_fork_parent(void)
{
	pthread_mutex_unlock(&shim.big_lock);
	pthread_mutex_unlock(&shim.lock);
}

/* Start the watcher thread if it is not running. Lock held. */
static bool start_watcher(void)
{
	if (!shim.watcher_running) {
		pthread_t t;
		pthread_attr_t attr;

		if (shim.epfd < 0) {
			shim.epfd = epoll_create1(EPOLL_CLOEXEC);
			shim.pokefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
			struct epoll_event pev = {.events = EPOLLIN, .data.fd = shim.pokefd};
			if (shim.epfd < 0 || shim.pokefd < 0 ||
			    epoll_ctl(shim.epfd, EPOLL_CTL_ADD, shim.pokefd, &pev) != 0)
				return false;
		}
		/* Born with every signal blocked: signals are the server's business. */
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		int r = pthread_create(&t, &attr, watcher, NULL);
		pthread_attr_destroy(&attr);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (r != 0)
			return false;
		shim.watcher_running = true;
	}
	return true;
}

/* Called with the lock held. Returns false when fd cannot be watched. */
static bool park(int fd, struct fd_entry *e, int lfd, uint64_t cookie)
{
	if (!start_watcher())
		return false;
	/* Kept out of programs the server may exec while it waits here. */
	if (!(e->flags & SOCK_CLOEXEC) && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0)
		e->flags |= SOCK_CLOEXEC;
	e->kind = FD_PARKED;
	e->listener = lfd;
	e->deadline_ms = now_ms() + shim.timeout_ms;
	atomic_store_explicit(&e->cookie, cookie, memory_order_release);
	enqueue(fd);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = fd};
	if (epoll_ctl(shim.epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		dequeue(fd);
		forget(e);
		return false;
	}
	poke(); /* the watcher may be waiting with no deadline: give it this one */
	return true;
}

/* --- mailboxes: late connections for whichever process wakes ------------- */

/* What travels with a descriptor through a mailbox. */
struct mail {
	int64_t deadline_ms; /* CLOCK_MONOTONIC is the same clock in every process */
	bool has_client;
	socklen_t client_len, dst_len;
	struct sockaddr_in6 client, dst;
};

/* lfd's mailbox, if it is still the listener it was made for. Lock held. */
static struct mailbox *mailbox_of(int lfd)
{
	struct fd_entry *l = entry(lfd);
	uint64_t cookie = l ? atomic_load_explicit(&l->cookie, memory_order_acquire) : 0;

	for (size_t i = 0; i < shim.nmailboxes && cookie; i++)
		if (shim.mailboxes[i].lfd == lfd && shim.mailboxes[i].cookie == cookie)
			return &shim.mailboxes[i];
	return NULL;
}

/*
 * Send fd with its mail into a mailbox, counted. The descriptor in flight is
 * a copy: fd stays open.
 */
static bool send_mail(const struct mailbox *m, const struct mail *mail, int fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = {.iov_base = (void *)mail, .iov_len = sizeof(*mail)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = sizeof(ctl.buf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	/* Counted first: a reader must never find mail that the count does not show. */
	atomic_fetch_add_explicit(&m->count->waiting, 1, memory_order_release);
	if (sendmsg(m->fds[1], &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof(*mail))
		return true;
	atomic_fetch_sub_explicit(&m->count->waiting, 1, memory_order_relaxed);
	return false;
}

/* Post a ready connection to its listener's mailbox; true when it went (and fd is closed here). */
static bool post(int fd, struct fd_entry *e)
{
	struct mailbox *m = mailbox_of(e->listener);
	if (!m)
		return false;
	struct mail mail = {.deadline_ms = e->deadline_ms, .has_client = e->has_client,
			    .client_len = e->client_len, .dst_len = e->dst_len, .client = e->client,
			    .dst = e->dst};
	if (!send_mail(m, &mail, fd))
		return false;
	dequeue(fd);
	forget(e);
	shim.real_close(fd); /* the copy in flight lives on */
	return true;
}

/*
 * The next connection in a mailbox, or -1 when there is none. One whose
 * deadline has passed is closed, and the next one looked at.
 */
static int receive_mail(const struct mailbox *m, struct mail *mail)
{
	for (;;) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(int))];
		} ctl;
		struct iovec iov = {.iov_base = mail, .iov_len = sizeof(*mail)};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
				     .msg_controllen = sizeof(ctl.buf)};
		ssize_t n = recvmsg(m->fds[0], &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0)
			return -1;
		atomic_fetch_sub_explicit(&m->count->waiting, 1, memory_order_relaxed);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		if (n != (ssize_t)sizeof(*mail) || !c || c->cmsg_type != SCM_RIGHTS ||
		    (msg.msg_flags & MSG_CTRUNC)) {
			debug("a mailbox message came without its connection (descriptor limit?)");
			continue;
		}
		int fd;
		memcpy(&fd, CMSG_DATA(c), sizeof(int));
		if (mail->deadline_ms > now_ms())
			return fd;
		debug("fd %d closed: the server did not accept it in time", fd);
		shim.real_close(fd);
	}
}

/* A connection from lfd's mailbox, its entry set up, or -1. */
static int take_mail(int lfd)
{
	pthread_mutex_lock(&shim.lock);
	struct mailbox *m = mailbox_of(lfd);
	struct mail mail;
	int fd = m ? receive_mail(m, &mail) : -1;
	pthread_mutex_unlock(&shim.lock);
	if (fd < 0)
		return -1;

	struct fd_entry *e = entry(fd);
	socklen_t plen = sizeof(e ? e->peer : mail.client);
	if (!e || shim.real_getpeername(fd, (struct sockaddr *)&e->peer, &plen) != 0) {
		debug("fd %d from the mailbox closed: %s", fd,
		      e ? "its peer is gone" : "beyond the shim's descriptor table");
		shim.real_close(fd);
		return -1;
	}
	e->peer_len = plen;
	int fl = fcntl(fd, F_GETFL);
	e->flags = SOCK_CLOEXEC | (fl >= 0 && (fl & O_NONBLOCK) ? SOCK_NONBLOCK : 0);
	e->has_client = mail.has_client;
	e->client = mail.client;
	e->client_len = mail.client_len;
	e->dst = mail.dst;
	e->dst_len = mail.dst_len;
	e->kind = FD_READY;
	atomic_store_explicit(&e->cookie, IN_USE, memory_order_release);
	debug("fd %d: taken from the mailbox of fd %d", fd, lfd);
	return fd;
}

/*
 * Whether a mailbox holds a connection nobody took yet. Peeking without a
 * control buffer installs no descriptor; an expired one is taken and closed.
 */
static bool mail_waiting(const struct mailbox *m)
{
	struct mail peek;

	if (recv(m->fds[0], &peek, sizeof(peek), MSG_PEEK | MSG_DONTWAIT) != (ssize_t)sizeof(peek))
		return false;
	if (peek.deadline_ms > now_ms())
		return true;
	struct mail mail;
	int fd = receive_mail(m, &mail); /* closes the expired ones */
	if (fd >= 0) {
		/* A live one was behind it: back it goes, for an accept() to take. */
		bool back = send_mail(m, &mail, fd);
		shim.real_close(fd);
		return back;
	}
	return false;
}

/* A mailbox's counter, from the shared slab, or NULL when none can be mapped. Lock held. */
static struct mail_count *new_count(void)
{
	unsigned i = shim.slab ? atomic_fetch_add(&shim.slab->used, 1) : SLAB_SLOTS;

	if (i >= SLAB_SLOTS) {
		/* Full, perhaps by other processes sharing it: a new one, for this process's children. */
		void *p = mmap(NULL, sizeof(struct mail_slab), PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
		shim.slab = p;
		i = atomic_fetch_add(&shim.slab->used, 1);
	}
	return &shim.slab->slot[i];
}

/* Let go of a mailbox of this process. Lock held. */
static void free_mailbox(struct mailbox *m)
{
	struct fd_entry *le = entry(m->lfd);

	if (le && atomic_load_explicit(&le->mail, memory_order_relaxed) == m->count)
		atomic_store_explicit(&le->mail, NULL, memory_order_relaxed);
	shim.real_close(m->fds[0]);
	shim.real_close(m->fds[1]);
	*m = shim.mailboxes[--shim.nmailboxes];
}

EXPORT int listen(int fd, int backlog)
{
	ensure_init();
	int r = shim.real_listen(fd, backlog);
	if (r != 0 || !shim.active)
		return r;
	/* A new listener, perhaps on a number a listener had before: read it afresh. */
	struct fd_entry *le = entry(fd);
	if (le && (le->kind == FD_LISTENER || le->kind == FD_PLAIN))
		forget(le);
	if (!proxy_listener(fd))
		return r;
	pthread_mutex_lock(&shim.lock);
	/* Mailboxes of listeners closed behind the shim's back (close_range, dup2) go. */
	for (size_t i = 0; i < shim.nmailboxes;) {
		struct mailbox *old = &shim.mailboxes[i];
		struct fd_entry *oe = entry(old->lfd);
		if (oe && atomic_load_explicit(&oe->cookie, memory_order_acquire) == old->cookie &&
		    old->cookie == cookie_of(old->lfd)) {
			i++;
			continue;
		}
		free_mailbox(old);
	}
	struct mailbox *m = mailbox_of(fd);
	if (!m && shim.nmailboxes < MAX_MAILBOXES) {
		struct mail_count *count = new_count();
		m = &shim.mailboxes[shim.nmailboxes];
		if (count && socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, m->fds) == 0) {
			m->lfd = fd;
			m->cookie = atomic_load_explicit(&entry(fd)->cookie, memory_order_acquire);
			m->woken_ms = 0;
			m->wake_wanted = false;
			m->count = count;
			m->family = AF_UNSPEC;
			m->port = 0;
			struct sockaddr_storage ss;
			socklen_t len = sizeof(ss);
			if (shim.real_getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
				m->family = ss.ss_family;
				if (ss.ss_family == AF_INET)
					m->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
				else if (ss.ss_family == AF_INET6)
					m->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
			}
			shim.nmailboxes++;
		} else {
			m = NULL;
		}
	}
	if (m)
		atomic_store_explicit(&entry(fd)->mail, m->count, memory_order_relaxed);
	pthread_mutex_unlock(&shim.lock);
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

/* Hand fd over with the flags the caller asked for and the address it should see. */
static int deliver(int fd, struct fd_entry *e, int flags, struct sockaddr *addr,
		   socklen_t *addrlen)
{
	/*
	 * A connection accepted in this call already has the caller's flags; one
	 * parked by an earlier call, or passed through a mailbox, may not.
	 * (Sockets have no other file status flag that F_SETFL could change.)
	 */
	if ((e->flags ^ flags) & SOCK_NONBLOCK)
		fcntl(fd, F_SETFL, flags & SOCK_NONBLOCK ? O_NONBLOCK : 0);
	if ((e->flags ^ flags) & SOCK_CLOEXEC)
		fcntl(fd, F_SETFD, flags & SOCK_CLOEXEC ? FD_CLOEXEC : 0);
	if (e->has_client) {
		fill_addr(&e->client, e->client_len, addr, addrlen);
	} else if (addr && addrlen) {
		/* LOCAL, UNKNOWN, UNSPEC: the connection's real peer. */
		shim.real_getpeername(fd, addr, addrlen);
	}
	e->kind = FD_PROXIED;
	return fd;
}

/* The oldest ready connection of listener lfd, taken off the queue, or -1. Lock held. */
static int pop_ready(int lfd)
{
	for (int fd = shim.queue_head; fd >= 0; fd = shim.table[fd].next) {
		if (shim.table[fd].kind == FD_READY && shim.table[fd].listener == lfd) {
			dequeue(fd);
			return fd;
		}
	}
	return -1;
}

/* Whether listener l's mailbox may hold a connection: no system call. */
static bool mail_waits(struct fd_entry *l)
{
	struct mail_count *c = atomic_load_explicit(&l->mail, memory_order_relaxed);

	return c && atomic_load_explicit(&c->waiting, memory_order_acquire) > 0;
}

/* Ask the watcher for a wake-up for lfd, to keep it readable while mail waits. */
static void ask_wake(int lfd)
{
	pthread_mutex_lock(&shim.lock);
	struct mailbox *m = mailbox_of(lfd);
	if (m && start_watcher()) {
		m->wake_wanted = true;
		poke();
	}
	pthread_mutex_unlock(&shim.lock);
}

static int do_accept(int lfd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	struct fd_entry *l = shim.active ? proxy_listener(lfd) : NULL;

	if (!l)
		return shim.real_accept4(lfd, addr, addrlen, flags);
	for (;;) {
		/*
		 * Connections whose header came after their accept go first, from
		 * this process's queue, then from the mailbox: so a wake-up waiting
		 * in the backlog keeps the listener readable until none is left, and
		 * a thread that blocks in the kernel never leaves one behind.
		 */
		int fd = -1;
		if (atomic_load_explicit(&shim.queued, memory_order_relaxed) > 0) {
			pthread_mutex_lock(&shim.lock);
			fd = pop_ready(lfd);
			pthread_mutex_unlock(&shim.lock);
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
		fd = shim.real_accept4(lfd, (struct sockaddr *)&peer, &plen, flags);
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
		uint64_t cookie = IN_USE;
		const char *why = NULL;
		int r = -1;
		if (e) {
			e->flags = flags;
			memcpy(&e->peer, &peer, plen < sizeof(e->peer) ? plen : sizeof(e->peer));
			e->peer_len = plen < sizeof(e->peer) ? plen : sizeof(e->peer);
		}
		if (!e)
			why = "beyond the shim's descriptor table (raise RLIMIT_NOFILE before start)";
		else if (!is_trusted((struct sockaddr *)&peer))
			why = "untrusted sender (not in NETPROXY_TRUSTED)";
		else
			r = try_header(fd, e, false, &why);
		if (r == 1 && !other_family(e, peer.ss_family, l->v6only)) {
			in_family(e, peer.ss_family);
			atomic_store_explicit(&e->cookie, cookie, memory_order_release);
			return deliver(fd, e, flags, addr, addrlen);
		}
		if (r == 1) {
			/* Its client is of a family this listener cannot report. */
			pthread_mutex_lock(&shim.lock);
			int to = route(fd, e, lfd, peer.ss_family, &why);
			if (to >= 0 && to != lfd && start_watcher()) {
				/* Kept out of programs the server may exec while it waits. */
				if (!(e->flags & SOCK_CLOEXEC) && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0)
					e->flags |= SOCK_CLOEXEC;
				atomic_store_explicit(&e->cookie, cookie, memory_order_release);
				enqueue(fd);
				make_ready(fd, e, to);
				poke(); /* for the wake-up */
				pthread_mutex_unlock(&shim.lock);
				continue;
			}
			pthread_mutex_unlock(&shim.lock);
			if (to == lfd) {
				atomic_store_explicit(&e->cookie, cookie, memory_order_release);
				return deliver(fd, e, flags, addr, addrlen);
			}
			if (to >= 0)
				why = "cannot watch it for its header";
		}
		if (r == 2) { /* a wake-up: what it announces is queued here or in the mailbox */
			forget(e);
			shim.real_close(fd);
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
	struct fd_entry *e = shim.active ? proxied_entry(fd) : NULL;
	if (e) {
		fill_addr(&e->client, e->client_len, addr, addrlen);
		return 0;
	}
	return shim.real_getpeername(fd, addr, addrlen);
}

EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	ensure_init();
	struct fd_entry *e = shim.active && shim.report_dst ? proxied_entry(fd) : NULL;
	if (e) {
		fill_addr(&e->dst, e->dst_len, addr, addrlen);
		return 0;
	}
	return shim.real_getsockname(fd, addr, addrlen);
}

/* fd is about to be closed (or replaced by dup2): forget what the shim knew of it. */
static void let_go(int fd)
{
	struct fd_entry *e = shim.active ? entry(fd) : NULL;
	if (e && atomic_load_explicit(&e->cookie, memory_order_acquire)) {
		pthread_mutex_lock(&shim.lock);
		if (e->kind == FD_LISTENER) {
			/* Its waiting connections can no longer be accepted. */
			for (int c = shim.queue_head, next; c >= 0; c = next) {
				next = shim.table[c].next;
				if (shim.table[c].listener == fd)
					drop_queued(c, "its listener was closed");
			}
			struct mailbox *m = mailbox_of(fd);
			if (m)
				free_mailbox(m);
		} else if (e->kind == FD_PARKED || e->kind == FD_READY) {
			/* Not the server's to close, but it did: the queue lets go of it. */
			if (e->kind == FD_PARKED)
				epoll_ctl(shim.epfd, EPOLL_CTL_DEL, fd, NULL);
			dequeue(fd);
		}
		forget(e);
		pthread_mutex_unlock(&shim.lock);
	}
}

EXPORT int close(int fd)
{
	ensure_init();
	let_go(fd);
	return shim.real_close(fd);
}

EXPORT int dup2(int oldfd, int newfd)
{
	ensure_init();
	if (oldfd != newfd)
		let_go(newfd);
	return shim.real_dup2(oldfd, newfd);
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
	ensure_init();
	if (oldfd != newfd)
		let_go(newfd);
	return shim.real_dup3(oldfd, newfd, flags);
}
