/*
 * netproxy-bench - a load generator for PROXY protocol receivers, and the
 * small backend it talks to.
 *
 *   netproxy-bench [options] HOST PORT             the load generator
 *   netproxy-bench serve [options] -l ADDR:PORT    the backend
 *
 * The load generator opens connections to HOST PORT (a receiver such as
 * netproxyd, HAProxy or nginx, or the backend itself), starts each with a
 * PROXY header built by libnetproxy (or none), then sends requests in the
 * protocol below and measures what comes back: rate, latency percentiles,
 * throughput, errors by kind. Each thread runs one epoll loop over
 * non-blocking sockets, registered once, edge-triggered, for both
 * directions; a connection lives and dies in one thread. Every run is
 * bounded in count (-n) and in time (-d) and says which bound stopped it.
 *
 * The wire protocol between the two. Each request begins with a 16-byte head:
 *
 *   0   'N' 'P' 'B' op
 *   4   body length, 32 bits big-endian: the bytes that follow the head
 *   8   response length, 32 bits big-endian
 *   12  flags: bit 0 = close the connection once the response is sent
 *   13  three bytes, zero
 *
 *   op 'R'  read the body, answer with response-length bytes of the pattern
 *   op 'E'  echo: answer with the body itself, byte for byte, as it arrives
 *   op 'U'  upload: read until the client's end of file, answer with the
 *           number of bytes read after the head (64 bits big-endian), close
 *   op 'D'  download: send the pattern until the client's end of file, close
 *
 * Byte i of a body, of a response and of a download is i mod 251, so either
 * side can check what it receives. Requests are answered one at a time, in
 * order: the backend reads the next request only once the previous answer
 * is written. Connections to a "-p" listener must start with a PROXY header
 * (parsed by np_parse()) before the first head.
 *
 * Exit status: 0 a run without errors, 1 errors (the report says which) or
 * a failure to start, 64 usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "netproxy.h"
#include "common.h"

#define PROG "netproxy-bench"

const char tool_name[] = PROG;

enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,
	EXIT_USAGE = TOOL_EXIT_USAGE,
};

#define MAX_SECONDS 1000000 /* -d, -w: about 11 days */
#define MAX_THREADS 256
#define MAX_CONNS 1000000u
#define MAX_MESSAGE (64u << 20) /* request and response sizes */
#define IO_BUF (256u * 1024u)	/* one recv() or send() at most */
#define SCAN_NS (100 * 1000000LL) /* how often timeouts are looked for */
#define WAKE_NS (50 * 1000000LL)  /* the longest epoll wait: signals are seen this soon */

/* --- the wire protocol ---------------------------------------------------- */

#define HEAD_LEN 16u
#define FLAG_CLOSE 0x01
enum { OP_RESPOND = 'R', OP_ECHO = 'E', OP_UPLOAD = 'U', OP_DOWNLOAD = 'D' };

/*
 * The pattern, long enough that any one read or write of IO_BUF bytes
 * starting at any offset is a contiguous slice of it.
 */
#define PATTERN_PERIOD 251u
#define PATTERN_SPAN (PATTERN_PERIOD * 1045u)
_Static_assert(PATTERN_SPAN >= IO_BUF, "a read must fit in the pattern");
static uint8_t pattern[PATTERN_SPAN + PATTERN_PERIOD];

static void pattern_init(void)
{
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i % PATTERN_PERIOD);
}

static const uint8_t *pattern_at(uint64_t offset)
{
	return pattern + offset % PATTERN_PERIOD;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void write_head(uint8_t *p, int op, uint32_t body, uint32_t response, uint8_t flags)
{
	memcpy(p, "NPB", 3);
	p[3] = (uint8_t)op;
	put_be32(p + 4, body);
	put_be32(p + 8, response);
	p[12] = flags;
	p[13] = p[14] = p[15] = 0;
}

/* --- small helpers -------------------------------------------------------- */

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	got_signal = sig;
}

/*
 * SIGINT and SIGTERM end the run (or the backend) with its report; writes to
 * a closed connection fail with EPIPE instead of killing the process.
 */
static void catch_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/*
 * A whole number, optionally followed by k, M or G (either case): thousands,
 * millions, billions, or with binary set KiB, MiB, GiB. 0 when it is one and
 * lies in [min, max].
 */
static int parse_number(const char *s, bool binary, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0, unit = 1;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p) {
		switch (*p) {
		case 'k': case 'K': unit = binary ? 1ULL << 10 : 1000ULL; break;
		case 'm': case 'M': unit = binary ? 1ULL << 20 : 1000000ULL; break;
		case 'g': case 'G': unit = binary ? 1ULL << 30 : 1000000000ULL; break;
		default: return -1;
		}
		if (p[1] != '\0')
			return -1;
	}
	if (v > UINT64_MAX / unit)
		return -1;
	v *= unit;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/*
 * Seconds as a decimal number ("2", "0.25"), read exactly into nanoseconds
 * (digits past the ninth decimal are ignored): above 0, at most MAX_SECONDS.
 */
static int parse_seconds(const char *s, int64_t *ns)
{
	int64_t whole = 0, fraction = 0, unit = NS_PER_S;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++)
		if ((whole = whole * 10 + (*p - '0')) > MAX_SECONDS)
			return -1;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			if (unit > 1) {
				unit /= 10;
				fraction += (*p - '0') * unit;
			}
	if (*p != '\0' || whole * NS_PER_S + fraction == 0)
		return -1;
	*ns = whole * NS_PER_S + fraction;
	return 0;
}

/* --- latency histogram ---------------------------------------------------- */

/*
 * Log-linear buckets over nanoseconds: exact below 256 ns, then 128 buckets
 * per power of two, so a percentile is off by less than 0.8% (HdrHistogram's
 * layout). Fixed size, no allocation, merged by adding.
 */
#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct histogram {
	uint64_t count, sum, min, max;
	uint64_t bucket[HIST_BUCKETS];
};

static unsigned hist_index(uint64_t v)
{
	if (v < 2 * HIST_SUB)
		return (unsigned)v;
	unsigned shift = 63 - (unsigned)__builtin_clzll(v) - HIST_SUB_BITS;
	return shift * HIST_SUB + (unsigned)(v >> shift);
}

/* The middle of bucket b's range. */
static uint64_t hist_value(unsigned b)
{
	if (b < 2 * HIST_SUB)
		return b;
	unsigned shift = b / HIST_SUB - 1;
	uint64_t low = (uint64_t)(b - shift * HIST_SUB) << shift;
	return low + ((1ULL << shift) >> 1);
}

static void hist_add(struct histogram *h, uint64_t v)
{
	if (h->count == 0 || v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->count++;
	h->sum += v;
	h->bucket[hist_index(v)]++;
}

static void hist_merge(struct histogram *into, const struct histogram *h)
{
	if (h->count == 0)
		return;
	if (into->count == 0 || h->min < into->min)
		into->min = h->min;
	if (h->max > into->max)
		into->max = h->max;
	into->count += h->count;
	into->sum += h->sum;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		into->bucket[i] += h->bucket[i];
}

/* The value at per_mille/1000 of the samples (999 for p99.9), within [min, max]. */
static uint64_t hist_percentile(const struct histogram *h, unsigned per_mille)
{
	uint64_t rank = (h->count * per_mille + 999) / 1000, seen = 0;

	if (rank == 0)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank) {
			uint64_t v = hist_value(i);
			return v < h->min ? h->min : v > h->max ? h->max : v;
		}
	}
	return h->max;
}

/* --- errors --------------------------------------------------------------- */

/*
 * Errors, by kind, for both sides: which counts a kind is its second field
 * (CLIENT, SERVER or BOTH), so each report lists only its own.
 */
enum { CLIENT = 1, SERVER = 2, BOTH = 3 };
#define ERROR_KINDS(X)                                                                  \
	X(REFUSED, CLIENT, "refused", "connection refused")                             \
	X(RESET, BOTH, "reset", "connection reset or broken")                           \
	X(TIMEOUT, CLIENT, "timeout", "no progress within the timeout")                 \
	X(SHORT, BOTH, "short", "closed in the middle of a request or response")        \
	X(CLOSED, CLIENT, "closed", "closed by the peer while idle")                    \
	X(UNEXPECTED, CLIENT, "unexpected", "bytes not asked for, or not as sent")      \
	X(BAD_HEADER, SERVER, "bad_header", "no valid PROXY header first")              \
	X(BAD_REQUEST, SERVER, "bad_request", "a request head that is not one")         \
	X(NO_PORT, CLIENT, "no_port", "no free local address or port")                  \
	X(NO_FD, BOTH, "no_fd", "out of file descriptors")                              \
	X(OTHER, BOTH, "other", "another system error")

enum error_kind {
#define ERROR_ENUM_(name, side, key, text) ERR_##name,
	ERROR_KINDS(ERROR_ENUM_)
#undef ERROR_ENUM_
	ERR_COUNT
};

static const struct {
	int side;
	const char *key, *text;
} error_kinds[] = {
#define ERROR_ROW_(name, side, key, text) {side, key, text},
	ERROR_KINDS(ERROR_ROW_)
#undef ERROR_ROW_
};

/* The error counts of one side as JSON members: "total":N,"refused":N,... */
static void print_error_json(const uint64_t *errors, int side)
{
	uint64_t total = 0;

	for (int k = 0; k < ERR_COUNT; k++)
		total += errors[k];
	printf("\"errors\":{\"total\":%" PRIu64, total);
	for (int k = 0; k < ERR_COUNT; k++)
		if (error_kinds[k].side & side)
			printf(",\"%s\":%" PRIu64, error_kinds[k].key, errors[k]);
	putchar('}');
}

static enum error_kind errno_kind(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return ERR_REFUSED;
	case ECONNRESET:
	case EPIPE:
	case ECONNABORTED:
		return ERR_RESET;
	case ETIMEDOUT:
		return ERR_TIMEOUT;
	case EADDRNOTAVAIL:
	case EADDRINUSE:
		return ERR_NO_PORT;
	case EMFILE:
	case ENFILE:
		return ERR_NO_FD;
	}
	return ERR_OTHER;
}

/* --- the load generator: options ------------------------------------------ */

enum mode { MODE_CONN, MODE_KEPT, MODE_UP, MODE_DOWN, MODE_IDLE };
static const char *const mode_name[] = {"conn", "kept", "up", "down", "idle"};

/* A range of IPv4 addresses, or one IPv6 address. */
struct addr_pool {
	bool set;
	int family;
	uint32_t first; /* IPv4, host order */
	uint32_t count;
	struct in6_addr addr6;
	char text[2 * INET6_ADDRSTRLEN + 2];
};

struct client_options {
	enum mode mode;
	int header; /* 0 none, 1 or 2 */
	unsigned concurrency, threads;
	uint64_t count;
	int64_t duration_ns, timeout_ns;
	uint32_t request_size, response_size;
	bool echo, verify, json;
	double rate; /* per second, all threads; 0: as fast as possible */
	uint64_t max_errors;
	struct addr_pool bind, claim;
	struct sockaddr_storage target;
	socklen_t target_len;
	char target_text[NP_SOCKADDRSTRLEN];
};

static struct client_options opt;

/* "A" or "A-B" (IPv4, B not below A), or one IPv6 address, of the target's family. */
static int parse_pool(const char *s, struct addr_pool *p)
{
	char a[INET6_ADDRSTRLEN + 2], b[INET6_ADDRSTRLEN + 2];
	const char *dash = strchr(s, '-');
	struct in_addr a4, b4;
	size_t n = dash ? (size_t)(dash - s) : strlen(s);

	memset(p, 0, sizeof(*p));
	if (n == 0 || n >= sizeof(a) || (dash && strlen(dash + 1) >= sizeof(b)))
		return -1;
	memcpy(a, s, n);
	a[n] = '\0';
	snprintf(p->text, sizeof(p->text), "%s", s);
	if (inet_pton(AF_INET, a, &a4) == 1) {
		p->family = AF_INET;
		p->first = ntohl(a4.s_addr);
		p->count = 1;
		if (dash) {
			snprintf(b, sizeof(b), "%s", dash + 1);
			if (inet_pton(AF_INET, b, &b4) != 1 || ntohl(b4.s_addr) < p->first)
				return -1;
			p->count = ntohl(b4.s_addr) - p->first + 1;
		}
	} else {
		if (dash)
			return -1; /* IPv6 ranges are not supported: one address */
		size_t m = strlen(a);
		if (m >= 2 && a[0] == '[' && a[m - 1] == ']') {
			memmove(a, a + 1, m - 2);
			a[m - 2] = '\0';
		}
		if (inet_pton(AF_INET6, a, &p->addr6) != 1)
			return -1;
		p->family = AF_INET6;
		p->count = 1;
	}
	p->set = true;
	return 0;
}

/* Put address i of the pool into *ss, keeping its port. */
static void pool_address(const struct addr_pool *p, uint32_t i, struct sockaddr_storage *ss)
{
	if (p->family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(p->first + i % p->count);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_addr = p->addr6;
	}
}

/* --- the load generator: state -------------------------------------------- */

enum cstate {
	C_FREE,	      /* no socket */
	C_CONNECTING, /* connect() in progress */
	C_REQUEST,    /* header and request going out, response coming in */
	C_CLOSING,    /* conn: the response is complete, waiting for the server's FIN */
	C_READY,      /* established, nothing outstanding */
	C_UP,	      /* up: streaming to the server */
	C_UP_ACK,     /* up: FIN sent, waiting for the count and the server's FIN */
	C_DOWN,	      /* down: streaming from the server */
	C_DOWN_DRAIN, /* down: FIN sent, reading what is still on its way */
};

struct cconn {
	int fd;
	uint32_t gen;	     /* bumped at each socket: tells stale events */
	uint8_t state;	     /* enum cstate */
	bool measured;	     /* C_REQUEST: counted (else the warm-up round trip) */
	uint8_t hdr_len;     /* PROXY header still to precede the request */
	uint8_t ack_len;     /* up: bytes of the count received */
	uint32_t pool_index; /* which --bind / --claim-src address */
	uint64_t out_off;    /* bytes of header + request sent */
	uint64_t in_got;     /* bytes of the response received */
	uint64_t reserved;   /* up: bytes taken from the count, not yet sent */
	uint64_t stream;     /* up/down: bytes moved after the head */
	int64_t start;	     /* when the measured operation began (latency) */
	int64_t deadline;    /* give up then (timeout); 0: never */
	uint8_t hdr[NP_V1_MAX_LEN]; /* the PROXY header, or the upload count */
};

enum phase { PHASE_ESTABLISH, PHASE_MEASURE };

struct worker {
	unsigned id;
	pthread_t thread;
	int epfd;
	enum phase phase;
	struct cconn *conns;
	unsigned nconns;   /* slots */
	unsigned target;   /* establish: connections to open in all */
	unsigned parallel; /* establish: at most this many opening at once */
	unsigned opened;   /* establish: attempts made */
	unsigned opening;  /* establish: connecting or in the warm-up round trip */
	unsigned active;   /* slots with a socket */
	unsigned busy;	   /* measured operations in progress */
	unsigned established;
	struct cconn **idle; /* conn: free slots; kept: connections waiting for a request */
	unsigned nidle;
	bool stopped;	     /* the deadline, a signal or the error limit was reached */
	bool stop_issuing;   /* no new operation is started */
	bool hit_deadline;
	int64_t now, t0, t_end, deadline, last_done, next_due, interval, establish_ns;
	uint64_t completed, in_flight_at_stop, bytes_sent, bytes_received, stream_bytes;
	uint64_t errors[ERR_COUNT];
	int first_other; /* errno of the first ERR_OTHER */
	struct histogram hist;
	uint8_t *rbuf;
};

static _Atomic uint64_t issued;	      /* operations (bytes for up/down) taken from -n */
static _Atomic bool budget_spent;     /* -n is used up */
static _Atomic uint64_t errors_total; /* against --max-errors */
static _Atomic uint32_t pool_next;    /* the next --bind address */
static _Atomic bool skip_measure;     /* set by main between the barriers */
static pthread_barrier_t barrier;
static uint8_t *request_keep, *request_close; /* the request, without and with FLAG_CLOSE */

static bool streaming(void)
{
	return opt.mode == MODE_UP || opt.mode == MODE_DOWN;
}

/* Bytes of response each request expects. */
static uint64_t response_want(void)
{
	return opt.echo ? opt.request_size - HEAD_LEN : opt.response_size;
}

static void count_error(struct worker *w, enum error_kind kind, int err)
{
	if (kind == ERR_OTHER && w->errors[ERR_OTHER] == 0)
		w->first_other = err;
	w->errors[kind]++;
	atomic_fetch_add(&errors_total, 1);
}

/* Take one operation from the -n budget. */
static bool take_op(void)
{
	if (atomic_fetch_add(&issued, 1) < opt.count)
		return true;
	atomic_store(&budget_spent, true);
	return false;
}

/* Register c's socket for both directions, once; 0 or -1 with errno set. */
static int watch(struct worker *w, struct cconn *c)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
		.data.u64 = (uint64_t)c->gen << 32 | (uint64_t)(c - w->conns),
	};
	return epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Close the socket; the caller has settled the counters. */
static void drop(struct worker *w, struct cconn *c)
{
	close(c->fd);
	c->fd = -1;
	c->state = C_FREE;
	c->deadline = 0;
	w->active--;
}

/* An operation on c failed: count it, close c, and free its slot for reuse where that applies. */
static void fail(struct worker *w, struct cconn *c, enum error_kind kind, int err)
{
	count_error(w, kind, err);
	if (c->state == C_CONNECTING || c->state == C_REQUEST) {
		if (c->measured)
			w->busy--;
		else
			w->opening--;
	} else if (c->state != C_READY) {
		w->busy--;
	}
	drop(w, c);
	if (opt.mode == MODE_CONN)
		w->idle[w->nidle++] = c;
}

/* --- the load generator: connections -------------------------------------- */

enum io { IO_MOVED, IO_RETRY, IO_WAIT, IO_EOF, IO_FAILED };

/*
 * What the result r of a send() or recv() on c means: bytes moved, try again
 * (EINTR), wait for the next edge (EAGAIN), the peer's FIN (recv() only),
 * or a failure, which has failed c.
 */
static enum io io_result(struct worker *w, struct cconn *c, ssize_t r)
{
	if (r > 0)
		return IO_MOVED;
	if (r == 0)
		return IO_EOF;
	if (errno == EINTR)
		return IO_RETRY;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return IO_WAIT;
	fail(w, c, errno_kind(errno), errno);
	return IO_FAILED;
}

/* Start a connection in slot c; its operation is measured from start. */
static void open_conn(struct worker *w, struct cconn *c, bool measured, int64_t start)
{
	int one = 1;
	int fd = socket(opt.target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		count_error(w, errno_kind(errno), errno);
		if (opt.mode == MODE_CONN)
			w->idle[w->nidle++] = c;
		return;
	}
	c->fd = fd;
	c->gen++; /* events still queued for the slot's last socket are now stale */
	c->measured = measured;
	c->state = C_CONNECTING;
	c->start = start;
	c->deadline = w->now + opt.timeout_ns;
	c->out_off = c->in_got = 0;
	c->hdr_len = 0;
	if (measured)
		w->busy++;
	else
		w->opening++;
	w->active++;
	/* Requests are whole messages: Nagle would only hold back the next one. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (opt.bind.set) {
		struct sockaddr_storage src;
		memset(&src, 0, sizeof(src));
		c->pool_index = atomic_fetch_add(&pool_next, 1);
		pool_address(&opt.bind, c->pool_index, &src);
		/*
		 * No port at bind(): the kernel picks it at connect() against the
		 * whole 4-tuple, so each source address has its own ports.
		 */
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&src,
			 src.ss_family == AF_INET ? sizeof(struct sockaddr_in)
						  : sizeof(struct sockaddr_in6)) != 0) {
			fail(w, c, errno_kind(errno), errno);
			return;
		}
	} else {
		c->pool_index = atomic_fetch_add(&pool_next, 1);
	}
	if ((connect(fd, (struct sockaddr *)&opt.target, opt.target_len) != 0 &&
	     errno != EINPROGRESS) ||
	    watch(w, c) != 0)
		fail(w, c, errno_kind(errno), errno);
}

/* The connection is up: build its PROXY header (the truth, or --claim-src). 0 or an errno. */
static int build_header(struct cconn *c)
{
	struct sockaddr_storage self;
	socklen_t len = sizeof(self);
	struct np_header h;
	int n;

	c->hdr_len = 0;
	if (opt.header == 0)
		return 0;
	memset(&self, 0, sizeof(self));
	if (getsockname(c->fd, (struct sockaddr *)&self, &len) != 0)
		return errno;
	if (opt.claim.set)
		pool_address(&opt.claim, c->pool_index, &self);
	if (np_header_from_sockaddr_len(&h, (struct sockaddr *)&self, len, (struct sockaddr *)&opt.target,
					opt.target_len) != 0)
		return EAFNOSUPPORT;
	if (opt.header == 1)
		n = np_build_v1(c->hdr, sizeof(c->hdr), &h);
	else
		n = np_build_v2(c->hdr, sizeof(c->hdr), &h, NULL, 0, 0);
	if (n < 0)
		return EINVAL; /* cannot happen: both fit in NP_V1_MAX_LEN */
	c->hdr_len = (uint8_t)n;
	return 0;
}

static void op_done(struct worker *w, struct cconn *c);
static void issue(struct worker *w);

/* Send what is left of header + request; then the response decides. */
static void push_request(struct worker *w, struct cconn *c)
{
	const uint8_t *req = opt.mode == MODE_CONN ? request_close : request_keep;
	uint64_t total = c->hdr_len + (uint64_t)opt.request_size;

	while (c->out_off < total) {
		struct iovec iov[2];
		struct msghdr m = {.msg_iov = iov};
		uint64_t req_off = 0;

		if (c->out_off < c->hdr_len) {
			iov[m.msg_iovlen].iov_base = c->hdr + c->out_off;
			iov[m.msg_iovlen++].iov_len = c->hdr_len - c->out_off;
		} else {
			req_off = c->out_off - c->hdr_len;
		}
		iov[m.msg_iovlen].iov_base = (void *)(req + req_off);
		iov[m.msg_iovlen++].iov_len = opt.request_size - req_off;
		ssize_t r = sendmsg(c->fd, &m, MSG_NOSIGNAL);
		enum io io = io_result(w, c, r);
		if (io == IO_MOVED) {
			c->out_off += (uint64_t)r;
			w->bytes_sent += (uint64_t)r;
		} else if (io != IO_RETRY) {
			return;
		}
	}
	if (c->in_got == response_want())
		op_done(w, c); /* an echo can be complete as the last byte goes out */
}

/* Begin a request on an established connection. */
static void send_request(struct worker *w, struct cconn *c, int64_t start)
{
	c->state = C_REQUEST;
	c->measured = true;
	c->start = start;
	c->deadline = w->now + opt.timeout_ns;
	c->out_off = c->in_got = 0;
	w->busy++;
	push_request(w, c);
}

static void connected(struct worker *w, struct cconn *c)
{
	int err = build_header(c);

	if (err) {
		fail(w, c, errno_kind(err), err);
		return;
	}
	c->state = C_REQUEST;
	c->deadline = w->now + opt.timeout_ns;
	push_request(w, c);
}

/* The whole response arrived (and the whole request left). */
static void op_done(struct worker *w, struct cconn *c)
{
	c->hdr_len = 0;
	if (!c->measured) { /* the warm-up round trip: established */
		c->state = C_READY;
		c->deadline = 0;
		w->opening--;
		w->established++;
		return;
	}
	w->now = now_ns(); /* the batch's time may be stale by now */
	if (!w->stopped) { /* after the stop an operation only drains, uncounted */
		hist_add(&w->hist, (uint64_t)(w->now - c->start));
		w->completed++;
		w->last_done = w->now;
	}
	if (opt.mode == MODE_CONN) {
		/* Wait for the server's FIN: its side, not ours, keeps the TIME_WAIT. */
		c->state = C_CLOSING;
		c->deadline = w->now + opt.timeout_ns;
		return;
	}
	c->state = C_READY;
	c->deadline = 0;
	w->busy--;
	if (w->stopped) {
		drop(w, c); /* nothing outstanding: a clean close */
		return;
	}
	w->idle[w->nidle++] = c;
	issue(w);
}

/* --- the load generator: streams ------------------------------------------ */

/*
 * End a stream from our side: FIN, then read what is still on its way (and,
 * for an upload, the server's count) until the server closes.
 */
static void finish_stream(struct worker *w, struct cconn *c)
{
	if (shutdown(c->fd, SHUT_WR) != 0) {
		fail(w, c, errno_kind(errno), errno);
		return;
	}
	c->state = c->state == C_UP ? C_UP_ACK : C_DOWN_DRAIN;
	c->ack_len = 0;
	c->deadline = w->now + opt.timeout_ns;
}

/* A signal, the deadline or the error limit: the run is over, whatever is left of -n. */
static bool time_up(const struct worker *w)
{
	return got_signal || w->now >= w->deadline || atomic_load(&errors_total) >= opt.max_errors;
}

/* Send the pattern until the socket is full, the count is used up or time is over. */
static void push_upload(struct worker *w, struct cconn *c)
{
	for (;;) {
		w->now = now_ns();
		if (time_up(w)) {
			finish_stream(w, c);
			return;
		}
		if (c->reserved == 0) { /* take the next chunk from -n */
			uint64_t before = atomic_load(&budget_spent) ? opt.count
								     : atomic_fetch_add(&issued, IO_BUF);
			if (before >= opt.count) {
				atomic_store(&budget_spent, true);
				finish_stream(w, c);
				return;
			}
			c->reserved = opt.count - before < IO_BUF ? opt.count - before : IO_BUF;
		}
		ssize_t r = send(c->fd, pattern_at(c->stream), c->reserved, MSG_NOSIGNAL);
		enum io io = io_result(w, c, r);
		if (io == IO_MOVED) {
			c->stream += (uint64_t)r;
			c->reserved -= (uint64_t)r;
			w->bytes_sent += (uint64_t)r;
			c->deadline = w->now + opt.timeout_ns;
		} else if (io != IO_RETRY) {
			return;
		}
	}
}

/* Turn an established connection into a stream: the head, then data. */
static void start_stream(struct worker *w, struct cconn *c)
{
	uint8_t head[HEAD_LEN];

	write_head(head, opt.mode == MODE_UP ? OP_UPLOAD : OP_DOWNLOAD, 0, 0, 0);
	/* The socket is idle and empty: 16 bytes always fit. */
	if (send(c->fd, head, sizeof(head), MSG_NOSIGNAL) != (ssize_t)sizeof(head)) {
		count_error(w, errno_kind(errno), errno);
		drop(w, c);
		return;
	}
	w->bytes_sent += sizeof(head);
	c->stream = c->reserved = 0;
	c->deadline = w->now + opt.timeout_ns;
	w->busy++;
	if (opt.mode == MODE_UP) {
		c->state = C_UP;
		push_upload(w, c);
	} else {
		c->state = C_DOWN;
	}
}

static void stream_done(struct worker *w, struct cconn *c)
{
	w->stream_bytes += c->stream;
	w->last_done = w->now;
	w->busy--;
	drop(w, c);
}

/* --- the load generator: receiving ---------------------------------------- */

/* n bytes arrived on c. false when c was closed. */
static bool got_bytes(struct worker *w, struct cconn *c, const uint8_t *p, size_t n)
{
	w->bytes_received += n;
	switch (c->state) {
	case C_REQUEST:
		if (n > response_want() - c->in_got || memcmp(p, pattern_at(c->in_got), n) != 0) {
			fail(w, c, ERR_UNEXPECTED, 0);
			return false;
		}
		c->in_got += n;
		if (c->in_got == response_want() && c->out_off == c->hdr_len + (uint64_t)opt.request_size)
			op_done(w, c);
		return true;
	case C_UP_ACK:
		if (n > sizeof(uint64_t) - c->ack_len) {
			fail(w, c, ERR_UNEXPECTED, 0);
			return false;
		}
		memcpy(c->hdr + c->ack_len, p, n);
		c->ack_len = (uint8_t)(c->ack_len + n);
		return true;
	case C_DOWN:
	case C_DOWN_DRAIN:
		if (opt.verify && memcmp(p, pattern_at(c->stream), n) != 0) {
			fail(w, c, ERR_UNEXPECTED, 0);
			return false;
		}
		c->stream += n;
		c->deadline = w->now + opt.timeout_ns;
		if (c->state == C_DOWN) {
			if (atomic_fetch_add(&issued, n) + n >= opt.count)
				atomic_store(&budget_spent, true);
			if (time_up(w) || atomic_load(&budget_spent))
				finish_stream(w, c);
		}
		return c->state != C_FREE;
	default: /* nothing was asked for */
		fail(w, c, ERR_UNEXPECTED, 0);
		return false;
	}
}

static void got_eof(struct worker *w, struct cconn *c)
{
	uint64_t count = 0;

	switch (c->state) {
	case C_CLOSING:
		w->busy--;
		drop(w, c);
		w->idle[w->nidle++] = c;
		issue(w);
		return;
	case C_DOWN_DRAIN:
		stream_done(w, c);
		return;
	case C_UP_ACK:
		for (unsigned i = 0; i < c->ack_len; i++)
			count = count << 8 | c->hdr[i];
		if (c->ack_len == sizeof(uint64_t) && count == c->stream)
			stream_done(w, c);
		else
			fail(w, c, c->ack_len == sizeof(uint64_t) ? ERR_UNEXPECTED : ERR_SHORT, 0);
		return;
	case C_READY:
		fail(w, c, ERR_CLOSED, 0);
		return;
	default:
		fail(w, c, ERR_SHORT, 0);
		return;
	}
}

static void on_readable(struct worker *w, struct cconn *c)
{
	uint32_t gen = c->gen;

	while (c->gen == gen && c->state != C_FREE) {
		ssize_t r = recv(c->fd, w->rbuf, IO_BUF, 0);
		switch (io_result(w, c, r)) {
		case IO_MOVED:
			if (!got_bytes(w, c, w->rbuf, (size_t)r))
				return;
			break;
		case IO_EOF:
			got_eof(w, c);
			return;
		case IO_RETRY:
			break;
		default:
			return;
		}
	}
}

static void on_event(struct worker *w, uint64_t data, uint32_t events)
{
	struct cconn *c = &w->conns[(uint32_t)data];
	uint32_t gen = (uint32_t)(data >> 32);

	if (c->gen != gen || c->state == C_FREE)
		return; /* an event for a socket closed earlier in this batch */
	if (c->state == C_CONNECTING) {
		if (events & (EPOLLERR | EPOLLHUP)) {
			int err = 0;
			socklen_t len = sizeof(err);
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
			fail(w, c, errno_kind(err ? err : ECONNRESET), err ? err : ECONNRESET);
			return;
		}
		if (!(events & EPOLLOUT))
			return;
		connected(w, c);
	} else if (events & EPOLLOUT) {
		if (c->state == C_REQUEST)
			push_request(w, c);
		else if (c->state == C_UP)
			push_upload(w, c);
	}
	if (c->gen == gen && c->state != C_FREE && c->state != C_CONNECTING &&
	    (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
		on_readable(w, c);
}

/* --- the load generator: the loop ----------------------------------------- */

/* Start what may be started now: connections (conn) or requests (kept). */
static void issue(struct worker *w)
{
	while (w->nidle > 0 && !w->stop_issuing) {
		int64_t start = w->now = now_ns();
		if (atomic_load(&errors_total) >= opt.max_errors)
			return;
		if (opt.rate > 0) {
			if (w->now < w->next_due)
				return;
			/* Latency counts from the planned start: a late request waited too. */
			start = w->next_due;
		}
		if (!take_op()) {
			w->stop_issuing = true;
			return;
		}
		if (opt.rate > 0)
			w->next_due += w->interval;
		struct cconn *c = w->idle[--w->nidle];
		if (opt.mode == MODE_CONN)
			open_conn(w, c, true, start);
		else if (c->state == C_READY) /* else lost while it waited */
			send_request(w, c, start);
	}
}

/* Open more connections while establishing, up to the limits. */
static void establish_more(struct worker *w)
{
	while (w->opened < w->target && w->opening < w->parallel &&
	       atomic_load(&errors_total) < opt.max_errors)
		open_conn(w, &w->conns[w->opened++], false, w->now);
}

/*
 * The deadline, a signal or the error limit: stop. Requests in flight finish
 * (within their timeout) but are no longer counted, so that every connection
 * closes as it would have; streams are wound down; connections still being
 * established are abandoned.
 */
static void halt(struct worker *w)
{
	w->stopped = w->stop_issuing = true;
	w->hit_deadline = w->now >= w->deadline;
	w->t_end = w->hit_deadline ? w->deadline : w->now;
	for (unsigned i = 0; i < w->nconns; i++) {
		struct cconn *c = &w->conns[i];
		switch (c->state) {
		case C_FREE:
		case C_UP_ACK:
		case C_DOWN_DRAIN: /* a stream finishing: let it */
			break;
		case C_UP:
		case C_DOWN:
			finish_stream(w, c);
			break;
		case C_READY: /* while establishing, kept for the measurement, if any */
			if (w->phase == PHASE_MEASURE)
				drop(w, c);
			break;
		case C_CLOSING:
			break;
		default: /* C_CONNECTING, C_REQUEST */
			if (c->measured) {
				w->in_flight_at_stop++;
			} else {
				w->opening--;
				drop(w, c);
			}
		}
	}
}

static bool phase_done(const struct worker *w)
{
	if (w->phase == PHASE_ESTABLISH)
		return w->opening == 0 && (w->stopped || w->opened == w->target ||
					   atomic_load(&errors_total) >= opt.max_errors);
	switch (opt.mode) {
	case MODE_CONN:
		return w->stop_issuing && w->busy == 0;
	case MODE_KEPT:
		return (w->stop_issuing && w->busy == 0) || w->active == 0;
	case MODE_IDLE:
		return w->stopped || w->active == 0;
	default:
		return w->busy == 0;
	}
}

static void scan_timeouts(struct worker *w)
{
	for (unsigned i = 0; i < w->nconns; i++) {
		struct cconn *c = &w->conns[i];
		if (c->state != C_FREE && c->deadline && w->now > c->deadline)
			fail(w, c, ERR_TIMEOUT, ETIMEDOUT);
	}
}

static int wait_events(int epfd, struct epoll_event *ev, int max, int64_t wait_ns)
{
	struct timespec ts = {.tv_sec = wait_ns / NS_PER_S, .tv_nsec = wait_ns % NS_PER_S};
	static _Atomic bool no_pwait2;

	if (!atomic_load(&no_pwait2)) {
		int n = epoll_pwait2(epfd, ev, max, &ts, NULL);
		if (n >= 0 || errno != ENOSYS)
			return n;
		atomic_store(&no_pwait2, true);
	}
	return epoll_wait(epfd, ev, max, (int)((wait_ns + 999999) / 1000000));
}

static void run_loop(struct worker *w)
{
	struct epoll_event ev[256];
	int64_t next_scan = w->now + SCAN_NS;

	for (;;) {
		w->now = now_ns();
		if (!w->stopped && (got_signal || w->now >= w->deadline ||
				    atomic_load(&errors_total) >= opt.max_errors))
			halt(w);
		if (!w->stopped) {
			if (w->phase == PHASE_ESTABLISH)
				establish_more(w);
			else
				issue(w);
		}
		if (phase_done(w))
			break;

		int64_t wait = WAKE_NS;
		if (!w->stopped && w->deadline - w->now < wait)
			wait = w->deadline - w->now;
		if (next_scan - w->now < wait)
			wait = next_scan - w->now;
		if (opt.rate > 0 && w->phase == PHASE_MEASURE && w->nidle > 0 && !w->stop_issuing &&
		    w->next_due - w->now < wait)
			wait = w->next_due - w->now;
		if (wait < 0)
			wait = 0;

		int n = wait_events(w->epfd, ev, (int)(sizeof(ev) / sizeof(ev[0])), wait);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, PROG ": epoll_wait: %s\n", strerror(errno));
			exit(EXIT_FAIL);
		}
		w->now = now_ns();
		for (int i = 0; i < n; i++)
			on_event(w, ev[i].data.u64, ev[i].events);
		if (w->now >= next_scan) {
			scan_timeouts(w);
			next_scan = w->now + SCAN_NS;
		}
	}
	if (!w->stopped)
		w->t_end = streaming() ? w->now : w->last_done ? w->last_done : w->now;
}

/* Enter the measured phase: every established connection starts working. */
static void start_measuring(struct worker *w)
{
	w->phase = PHASE_MEASURE;
	w->stopped = w->stop_issuing = false;
	w->hit_deadline = false;
	w->now = w->t0 = w->next_due = w->last_done = now_ns();
	w->deadline = w->t0 + opt.duration_ns;
	for (unsigned i = 0; i < w->nconns; i++) {
		struct cconn *c = &w->conns[i];
		if (c->state != C_READY)
			continue;
		if (opt.mode == MODE_KEPT)
			w->idle[w->nidle++] = c;
		else if (streaming())
			start_stream(w, c);
	}
}

static void close_all(struct worker *w)
{
	for (unsigned i = 0; i < w->nconns; i++)
		if (w->conns[i].state != C_FREE)
			drop(w, &w->conns[i]);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	w->now = now_ns();
	if (opt.mode != MODE_CONN) {
		int64_t begin = w->now;
		w->phase = PHASE_ESTABLISH;
		w->deadline = begin + opt.duration_ns;
		run_loop(w);
		w->establish_ns = now_ns() - begin;
		pthread_barrier_wait(&barrier); /* all threads have established */
		pthread_barrier_wait(&barrier); /* main has decided */
		if (atomic_load(&skip_measure)) {
			close_all(w);
			return NULL;
		}
		start_measuring(w);
	} else {
		w->phase = PHASE_MEASURE;
		w->t0 = w->next_due = w->now;
		w->deadline = w->t0 + opt.duration_ns;
	}
	run_loop(w);
	close_all(w);
	return NULL;
}

/* --- the load generator: the report --------------------------------------- */

struct totals {
	uint64_t completed, in_flight_at_stop, bytes_sent, bytes_received, stream_bytes;
	uint64_t errors[ERR_COUNT], error_sum;
	unsigned established, target;
	int first_other;
	int64_t t0, t_end, establish_ns;
	bool hit_deadline;
	struct histogram hist;
	double user_s, system_s;
};

static void add_up(struct worker *ws, unsigned n, struct totals *t)
{
	struct rusage ru;

	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < n; i++) {
		struct worker *w = &ws[i];
		t->completed += w->completed;
		t->in_flight_at_stop += w->in_flight_at_stop;
		t->bytes_sent += w->bytes_sent;
		t->bytes_received += w->bytes_received;
		t->stream_bytes += w->stream_bytes;
		for (int k = 0; k < ERR_COUNT; k++) {
			t->errors[k] += w->errors[k];
			t->error_sum += w->errors[k];
		}
		if (!t->first_other)
			t->first_other = w->first_other;
		t->established += w->established;
		t->target += w->target;
		if (i == 0 || w->t0 < t->t0)
			t->t0 = w->t0;
		if (w->t_end > t->t_end)
			t->t_end = w->t_end;
		if (w->establish_ns > t->establish_ns)
			t->establish_ns = w->establish_ns;
		t->hit_deadline |= w->hit_deadline;
		hist_merge(&t->hist, &w->hist);
	}
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		t->user_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
		t->system_s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	}
}

/* Why the run ended, one word. */
static const char *stop_reason(const struct totals *t, bool measured)
{
	if (got_signal)
		return "signal";
	if (t->error_sum >= opt.max_errors)
		return "errors";
	if (!measured)
		return t->established == 0 ? "no-connections" : "time";
	if (atomic_load(&budget_spent))
		return "count";
	if (t->hit_deadline)
		return "time";
	return opt.mode == MODE_CONN ? "count" : "no-connections";
}

static const char *reason_text(const char *reason)
{
	if (strcmp(reason, "signal") == 0)
		return "a signal";
	if (strcmp(reason, "errors") == 0)
		return "the error limit (--max-errors)";
	if (strcmp(reason, "count") == 0)
		return "the count (-n)";
	if (strcmp(reason, "time") == 0)
		return "the time limit (-d)";
	return "every connection was lost";
}

/* A duration in ns as text with a fitting unit. */
static void duration_text(double ns, char *out, size_t cap)
{
	if (ns < 1e3)
		snprintf(out, cap, "%.0f ns", ns);
	else if (ns < 1e6)
		snprintf(out, cap, "%.1f \xc2\xb5s", ns / 1e3);
	else if (ns < 1e9)
		snprintf(out, cap, "%.2f ms", ns / 1e6);
	else
		snprintf(out, cap, "%.2f s", ns / 1e9);
}

static void bytes_text(uint64_t b, char *out, size_t cap)
{
	if (b < 1024)
		snprintf(out, cap, "%" PRIu64 " B", b);
	else if (b < (1u << 20))
		snprintf(out, cap, "%.1f KiB", (double)b / 1024);
	else if (b < (1u << 30))
		snprintf(out, cap, "%.1f MiB", (double)b / (1 << 20));
	else
		snprintf(out, cap, "%.2f GiB", (double)b / (1 << 30));
}

static const char *header_name(void)
{
	return opt.header == 0 ? "none" : opt.header == 1 ? "v1" : "v2";
}

static void report_text(const struct totals *t, const char *reason, double elapsed)
{
	char a[32], b[32], c[32], d[32], e[32], f[32];
	const char *what = opt.mode == MODE_CONN ? "connections" : "requests";

	printf(PROG ": %s to %s, PROXY header %s, ", mode_name[opt.mode], opt.target_text,
	       header_name());
	if (opt.mode == MODE_IDLE)
		printf("%" PRIu64 " connections (%u opened at once)", opt.count, opt.concurrency);
	else
		printf("%u %s", opt.concurrency,
		       streaming() ? (opt.concurrency == 1 ? "stream" : "streams")
		       : opt.mode == MODE_CONN ? "in flight"
		       : opt.concurrency == 1 ? "connection" : "connections");
	printf(", %u thread%s\n", opt.threads, opt.threads == 1 ? "" : "s");
	printf("  stopped by     %s\n", reason_text(reason));
	if (opt.mode != MODE_CONN) {
		duration_text((double)t->establish_ns, a, sizeof(a));
		printf("  established    %u of %u in %s\n", t->established, t->target, a);
	}
	if (opt.mode == MODE_CONN || opt.mode == MODE_KEPT) {
		printf("  %-14s %" PRIu64 " in %.3f s: %.0f/s", what, t->completed, elapsed,
		       elapsed > 0 ? (double)t->completed / elapsed : 0.0);
		if (opt.rate > 0)
			printf(" (paced at %.0f/s)", opt.rate);
		putchar('\n');
		if (t->in_flight_at_stop)
			printf("  not counted    %" PRIu64 " in flight at the stop (left to finish)\n",
			       t->in_flight_at_stop);
		if (t->hist.count) {
			duration_text((double)hist_percentile(&t->hist, 500), a, sizeof(a));
			duration_text((double)hist_percentile(&t->hist, 990), b, sizeof(b));
			duration_text((double)hist_percentile(&t->hist, 999), c, sizeof(c));
			duration_text((double)t->hist.min, d, sizeof(d));
			duration_text((double)t->hist.max, e, sizeof(e));
			duration_text((double)t->hist.sum / (double)t->hist.count, f, sizeof(f));
			printf("  latency        p50 %s, p99 %s, p99.9 %s (min %s, max %s, mean %s)\n",
			       a, b, c, d, e, f);
		}
	} else if (streaming()) {
		bytes_text(t->stream_bytes, a, sizeof(a));
		double mib = elapsed > 0 ? (double)t->stream_bytes / elapsed / (1 << 20) : 0;
		printf("  %-14s %s in %.3f s: %.1f MiB/s (%.2f Gbit/s)\n",
		       opt.mode == MODE_UP ? "uploaded" : "downloaded", a, elapsed, mib,
		       mib * 8 * (1 << 20) / 1e9);
	} else {
		printf("  held           %u connections for %.3f s\n", t->established, elapsed);
	}
	bytes_text(t->bytes_sent, a, sizeof(a));
	bytes_text(t->bytes_received, b, sizeof(b));
	printf("  bytes          sent %s, received %s\n", a, b);
	if (t->error_sum == 0) {
		printf("  errors         none\n");
	} else {
		printf("  errors         %" PRIu64 ":", t->error_sum);
		const char *sep = " ";
		for (int k = 0; k < ERR_COUNT; k++) {
			if (!t->errors[k])
				continue;
			printf("%s%s %" PRIu64 " (%s", sep, error_kinds[k].key, t->errors[k],
			       error_kinds[k].text);
			if (k == ERR_OTHER && t->first_other)
				printf("; first: %s", strerror(t->first_other));
			putchar(')');
			sep = ", ";
		}
		putchar('\n');
	}
	printf("  client CPU     user %.2f s, system %.2f s\n", t->user_s, t->system_s);
}

static void report_json(const struct totals *t, const char *reason, double elapsed)
{
	printf("{\"mode\":\"%s\",\"target\":\"%s\",\"header\":\"%s\",\"threads\":%u,"
	       "\"concurrency\":%u,\"request_size\":%u,\"response_size\":%" PRIu64 ","
	       "\"count_limit\":%" PRIu64 ",\"duration_limit_s\":%.3f,\"rate_limit\":%.1f,",
	       mode_name[opt.mode], opt.target_text, header_name(), opt.threads, opt.concurrency,
	       opt.request_size, response_want(), opt.count, (double)opt.duration_ns / 1e9,
	       opt.rate);
	printf("\"stop\":\"%s\",\"elapsed_s\":%.6f,\"completed\":%" PRIu64 ",\"rate_per_s\":%.1f,"
	       "\"in_flight_at_stop\":%" PRIu64 ",",
	       reason, elapsed, t->completed,
	       elapsed > 0 ? (double)t->completed / elapsed : 0.0, t->in_flight_at_stop);
	if (t->hist.count)
		printf("\"latency_us\":{\"samples\":%" PRIu64 ",\"min\":%.3f,\"p50\":%.3f,\"p99\":%.3f,"
		       "\"p999\":%.3f,\"max\":%.3f,\"mean\":%.3f},",
		       t->hist.count, (double)t->hist.min / 1e3,
		       (double)hist_percentile(&t->hist, 500) / 1e3,
		       (double)hist_percentile(&t->hist, 990) / 1e3,
		       (double)hist_percentile(&t->hist, 999) / 1e3, (double)t->hist.max / 1e3,
		       (double)t->hist.sum / (double)t->hist.count / 1e3);
	else
		printf("\"latency_us\":null,");
	printf("\"established\":%u,\"establish_target\":%u,\"establish_s\":%.6f,"
	       "\"stream_bytes\":%" PRIu64 ",\"throughput_mib_s\":%.3f,"
	       "\"bytes_sent\":%" PRIu64 ",\"bytes_received\":%" PRIu64 ",",
	       t->established, t->target, (double)t->establish_ns / 1e9, t->stream_bytes,
	       elapsed > 0 ? (double)t->stream_bytes / elapsed / (1 << 20) : 0.0, t->bytes_sent,
	       t->bytes_received);
	print_error_json(t->errors, CLIENT);
	printf(",\"client_cpu_s\":{\"user\":%.3f,\"system\":%.3f}}\n", t->user_s, t->system_s);
}

/* --- the load generator: main --------------------------------------------- */

static void client_usage(FILE *out)
{
	fputs("usage: " PROG " [-m MODE] [--header v1|v2|none] [-c N] [-t N] [-n N] [-d SECONDS]\n"
	      "                      [--request-size BYTES] [--response-size BYTES] [--echo]\n"
	      "                      [--rate N] [--bind ADDR[-ADDR]] [--claim-src ADDR[-ADDR]]\n"
	      "                      [-w SECONDS] [--max-errors N] [--verify] [-j] HOST PORT\n"
	      "       " PROG " serve [-l ADDR:PORT]... [-p ADDR:PORT]... [-t N] [-d SECONDS] [-j]\n"
	      "       " PROG " -h | --help | --version\n"
	      "\n"
	      "Load a PROXY protocol receiver (or the backend directly): open connections\n"
	      "to HOST PORT, send a PROXY header and requests, and report the rate, the\n"
	      "latency at p50, p99 and p99.9, the throughput and the errors. Every run ends\n"
	      "at the count (-n) or the time limit (-d), whichever comes first, and says\n"
	      "which. 'serve' runs the backend the requests are meant for (see serve --help).\n"
	      "\n"
	      "modes (-m):\n"
	      "  conn    a new connection per request: connect, header, request, response,\n"
	      "          the server's close; -n connections, -c in flight (default 32)\n"
	      "  kept    requests on -c kept connections (default 32), one outstanding on\n"
	      "          each; -n requests (the default mode)\n"
	      "  up      bulk upload on -c streams (default 1); -n bytes\n"
	      "  down    bulk download on -c streams (default 1); -n bytes\n"
	      "  idle    open -n connections (default 1000), -c at a time (default 100), each\n"
	      "          with its header and one round trip, then hold them for -d seconds or\n"
	      "          until SIGTERM or SIGINT; a line on standard error says when all are\n"
	      "          established\n"
	      "\n"
	      "options:\n"
	      "  -m, --mode MODE         conn, kept, up, down or idle\n"
	      "  --header VERSION        v1, v2 (the default) or none; the header claims the\n"
	      "                          connection's own endpoints\n"
	      "  -c, --concurrency N     connections in flight (see the modes)\n"
	      "  -t, --threads N         threads, each with its own share of the connections\n"
	      "                          (default 1)\n"
	      "  -n, --count N           stop after N operations (bytes for up and down);\n"
	      "                          k, M, G suffixes (KiB, MiB, GiB for bytes)\n"
	      "  -d, --duration SECONDS  stop after SECONDS (default 10); connections are\n"
	      "                          opened (kept, up, down, idle) within the same bound\n"
	      "                          before the measured part starts\n"
	      "  --request-size BYTES    bytes per request, its 16-byte head included\n"
	      "                          (default 64)\n"
	      "  --response-size BYTES   bytes per response (default 64)\n"
	      "  --echo                  ask for the request's body back instead\n"
	      "  --rate N                start N requests (conn: connections) per second in\n"
	      "                          all, evenly; latency counts from the planned start\n"
	      "  -b, --bind ADDR[-ADDR]  connect from these local addresses in turn (an IPv4\n"
	      "                          range, or one IPv6 address); the port is chosen at\n"
	      "                          connect time (IP_BIND_ADDRESS_NO_PORT)\n"
	      "  --claim-src ADDR[-ADDR] the source address the header claims instead of the\n"
	      "                          real one (the port stays the connection's own)\n"
	      "  -w, --timeout SECONDS   fail a connect, a response or a stalled stream after\n"
	      "                          SECONDS (default 5)\n"
	      "  --max-errors N          stop after N errors (default 1000)\n"
	      "  --verify                check downloaded bytes against the pattern\n"
	      "                          (responses are always checked)\n"
	      "  -j, --json              print one JSON object instead of text\n"
	      "  -h, --help              print this help and exit\n"
	      "  --version               print the version and exit\n"
	      "\n"
	      "exit status:\n"
	      "  0   the run ended without errors\n"
	      "  1   there were errors (the report counts them by kind), or the run could\n"
	      "      not start\n"
	      "  64  usage error\n",
	      out);
}

enum {
	OPT_HEADER = 256,
	OPT_REQUEST_SIZE,
	OPT_RESPONSE_SIZE,
	OPT_ECHO,
	OPT_RATE,
	OPT_CLAIM,
	OPT_MAX_ERRORS,
	OPT_VERIFY,
	OPT_VERSION,
};

/* Defaults that depend on the mode, and the options that cannot go together. */
static int check_client_options(bool count_set, bool conc_set, bool req_set, bool resp_set)
{
	static const uint64_t default_count[] = {1000000, 10000000, 64ULL << 30, 64ULL << 30, 1000};
	static const unsigned default_conc[] = {32, 32, 1, 1, 100};

	if (!count_set)
		opt.count = default_count[opt.mode];
	if (!conc_set)
		opt.concurrency = default_conc[opt.mode];
	if (opt.mode == MODE_IDLE && opt.count > MAX_CONNS)
		return usage_error("-n: idle holds at most 1000000 connections");
	if (opt.echo && resp_set)
		return usage_error("--echo answers with the request's body: no --response-size");
	if (opt.echo && opt.request_size == HEAD_LEN)
		return usage_error("--echo needs a body: --request-size above 16");
	if ((opt.echo || req_set || resp_set) && streaming())
		return usage_error("--request-size, --response-size and --echo are for conn, "
				   "kept and idle");
	if (opt.rate > 0 && opt.mode != MODE_CONN && opt.mode != MODE_KEPT)
		return usage_error("--rate is for conn and kept");
	if (opt.verify && opt.mode != MODE_DOWN)
		return usage_error("--verify is for down (responses are always checked)");
	unsigned units = opt.mode == MODE_IDLE ? (unsigned)opt.count : opt.concurrency;
	if (opt.threads > units)
		return usage_error("-t: more threads (%u) than connections (%s %u)", opt.threads,
				   opt.mode == MODE_IDLE ? "-n" : "-c", units);
	if (opt.bind.set && opt.bind.family != opt.target.ss_family)
		return usage_error("--bind: not of the target's address family: '%s'", opt.bind.text);
	if (opt.claim.set && opt.claim.family != opt.target.ss_family)
		return usage_error("--claim-src: not of the target's address family: '%s'", opt.claim.text);
	if (opt.claim.set && opt.header == 0)
		return usage_error("--claim-src needs a header (not --header none)");
	return EXIT_OK;
}

static int parse_client(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"mode", required_argument, NULL, 'm'},
		{"header", required_argument, NULL, OPT_HEADER},
		{"concurrency", required_argument, NULL, 'c'},
		{"threads", required_argument, NULL, 't'},
		{"count", required_argument, NULL, 'n'},
		{"duration", required_argument, NULL, 'd'},
		{"request-size", required_argument, NULL, OPT_REQUEST_SIZE},
		{"response-size", required_argument, NULL, OPT_RESPONSE_SIZE},
		{"echo", no_argument, NULL, OPT_ECHO},
		{"rate", required_argument, NULL, OPT_RATE},
		{"bind", required_argument, NULL, 'b'},
		{"claim-src", required_argument, NULL, OPT_CLAIM},
		{"timeout", required_argument, NULL, 'w'},
		{"max-errors", required_argument, NULL, OPT_MAX_ERRORS},
		{"verify", no_argument, NULL, OPT_VERIFY},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0},
	};
	bool conc_set = false, req_set = false, resp_set = false;
	const char *count_arg = NULL;
	uint64_t v;
	int c;

	opt.mode = MODE_KEPT;
	opt.header = 2;
	opt.threads = 1;
	opt.duration_ns = 10 * NS_PER_S;
	opt.timeout_ns = 5 * NS_PER_S;
	opt.request_size = 64;
	opt.response_size = 64;
	opt.max_errors = 1000;
	while ((c = getopt_long(argc, argv, "m:c:t:n:d:b:w:jh", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': {
			int found = -1;
			for (int i = 0; i < (int)(sizeof(mode_name) / sizeof(mode_name[0])); i++)
				if (strcmp(optarg, mode_name[i]) == 0)
					found = i;
			if (found < 0)
				return usage_error("-m: not conn, kept, up, down or idle: '%s'", optarg);
			opt.mode = (enum mode)found;
			break;
		}
		case OPT_HEADER:
			if (strcmp(optarg, "v1") == 0)
				opt.header = 1;
			else if (strcmp(optarg, "v2") == 0)
				opt.header = 2;
			else if (strcmp(optarg, "none") == 0)
				opt.header = 0;
			else
				return usage_error("--header: not v1, v2 or none: '%s'", optarg);
			break;
		case 'c':
			if (parse_number(optarg, false, 1, MAX_CONNS, &v) != 0)
				return usage_error("-c: not a number from 1 to 1000000: '%s'", optarg);
			opt.concurrency = (unsigned)v;
			conc_set = true;
			break;
		case 't':
			if (parse_number(optarg, false, 1, MAX_THREADS, &v) != 0)
				return usage_error("-t: not a number from 1 to 256: '%s'", optarg);
			opt.threads = (unsigned)v;
			break;
		case 'n': /* read once the mode is known: bytes or operations */
			count_arg = optarg;
			break;
		case OPT_REQUEST_SIZE:
		case OPT_RESPONSE_SIZE: {
			bool req = c == OPT_REQUEST_SIZE; /* a request holds at least its head */
			if (parse_number(optarg, true, req ? HEAD_LEN : 1, MAX_MESSAGE, &v) != 0)
				return usage_error("--%s-size: not a size from %s to 64 MiB: '%s'",
						   req ? "request" : "response",
						   req ? "16 bytes" : "1 byte", optarg);
			*(req ? &opt.request_size : &opt.response_size) = (uint32_t)v;
			*(req ? &req_set : &resp_set) = true;
			break;
		}
		case OPT_ECHO:
			opt.echo = true;
			break;
		case OPT_RATE: {
			char *end;
			errno = 0;
			opt.rate = strtod(optarg, &end);
			if (optarg[0] < '0' || optarg[0] > '9' || errno || *end || !(opt.rate > 0) ||
			    opt.rate > 1e9)
				return usage_error("--rate: not a number per second above 0: '%s'", optarg);
			break;
		}
		case 'b':
		case OPT_CLAIM:
			if (parse_pool(optarg, c == 'b' ? &opt.bind : &opt.claim) != 0)
				return usage_error("%s: not ADDR or FIRST-LAST (IPv4, ascending): '%s'",
						   c == 'b' ? "--bind" : "--claim-src", optarg);
			break;
		case 'd':
		case 'w':
			if (parse_seconds(optarg, c == 'd' ? &opt.duration_ns : &opt.timeout_ns) != 0)
				return usage_error("-%c: not a number of seconds above 0: '%s'", c, optarg);
			break;
		case OPT_MAX_ERRORS:
			if (parse_number(optarg, false, 1, UINT64_MAX / 2, &v) != 0)
				return usage_error("--max-errors: not a number of at least 1: '%s'", optarg);
			opt.max_errors = v;
			break;
		case OPT_VERIFY:
			opt.verify = true;
			break;
		case 'j':
			opt.json = true;
			break;
		case 'h':
			client_usage(stdout);
			return -1;
		case OPT_VERSION:
			puts(PROG " " NP_VERSION_STRING);
			return -1;
		default:
			return usage_error(NULL);
		}
	}
	if (count_arg && parse_number(count_arg, streaming(), 1, UINT64_MAX / 2, &opt.count) != 0)
		return usage_error("-n: not a %s of at least 1: '%s'",
				   streaming() ? "number of bytes" : "count", count_arg);
	if (argc - optind < 2)
		return usage_error("HOST and PORT are required");
	if (argc - optind > 2)
		return usage_error("unexpected argument: '%s'", argv[optind + 2]);

	struct addrinfo hints, *res;
	int e;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (parse_number(argv[optind + 1], false, 1, 65535, &v) != 0)
		return usage_error("PORT: not a number from 1 to 65535: '%s'", argv[optind + 1]);
	e = getaddrinfo(argv[optind], argv[optind + 1], &hints, &res);
	if (e != 0) {
		fprintf(stderr, PROG ": %s: %s\n", argv[optind],
			e == EAI_SYSTEM ? strerror(errno) : gai_strerror(e));
		return EXIT_FAIL;
	}
	memcpy(&opt.target, res->ai_addr, res->ai_addrlen);
	opt.target_len = res->ai_addrlen;
	freeaddrinfo(res);
	np_format_sockaddr(opt.target_text, sizeof(opt.target_text),
			   (const struct sockaddr *)&opt.target, opt.target_len);
	return check_client_options(count_arg != NULL, conc_set, req_set, resp_set);
}

/* This thread's share of n: an even split, the first ones taking the remainder. */
static unsigned share(uint64_t n, unsigned i)
{
	return (unsigned)(n / opt.threads + (i < n % opt.threads ? 1 : 0));
}

static int setup_workers(struct worker *ws)
{
	for (unsigned i = 0; i < opt.threads; i++) {
		struct worker *w = &ws[i];
		w->id = i;
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		w->nconns = opt.mode == MODE_IDLE ? share(opt.count, i) : share(opt.concurrency, i);
		w->target = w->nconns;
		w->parallel = opt.mode == MODE_IDLE ? share(opt.concurrency, i) : w->nconns;
		if (w->parallel == 0)
			w->parallel = 1;
		w->conns = calloc(w->nconns, sizeof(*w->conns));
		w->idle = calloc(w->nconns, sizeof(*w->idle));
		w->rbuf = malloc(IO_BUF);
		if (w->epfd < 0 || !w->conns || !w->idle || !w->rbuf) {
			fprintf(stderr, PROG ": cannot set up thread %u: %s\n", i, strerror(errno));
			return -1;
		}
		for (unsigned k = 0; k < w->nconns; k++)
			w->conns[k].fd = -1;
		if (opt.mode == MODE_CONN)
			for (unsigned k = 0; k < w->nconns; k++)
				w->idle[w->nidle++] = &w->conns[w->nconns - 1 - k];
		if (opt.rate > 0)
			w->interval = (int64_t)((double)NS_PER_S * opt.threads / opt.rate);
	}
	return 0;
}

static int client_main(int argc, char **argv)
{
	int r = parse_client(argc, argv);
	if (r != EXIT_OK)
		return r < 0 ? EXIT_OK : r;

	uint64_t fds = (opt.mode == MODE_IDLE ? opt.count : opt.concurrency) + 16;
	if (raise_fd_limit(fds, opt.mode == MODE_IDLE ? "-n" : "-c") != 0)
		return EXIT_FAIL;
	pattern_init();
	request_keep = malloc(opt.request_size);
	request_close = malloc(opt.request_size);
	struct worker *ws = calloc(opt.threads, sizeof(*ws));
	if (!request_keep || !request_close || !ws) {
		fprintf(stderr, PROG ": out of memory\n");
		return EXIT_FAIL;
	}
	uint32_t body = opt.request_size - HEAD_LEN;
	int op = opt.echo ? OP_ECHO : OP_RESPOND;
	write_head(request_keep, op, body, (uint32_t)response_want(), 0);
	write_head(request_close, op, body, (uint32_t)response_want(), FLAG_CLOSE);
	memcpy(request_keep + HEAD_LEN, pattern, body < PATTERN_SPAN ? body : PATTERN_SPAN);
	for (uint32_t off = PATTERN_SPAN; off < body; off += PATTERN_SPAN)
		memcpy(request_keep + HEAD_LEN + off, pattern_at(off),
		       body - off < PATTERN_SPAN ? body - off : PATTERN_SPAN);
	memcpy(request_close + HEAD_LEN, request_keep + HEAD_LEN, body);

	catch_signals();

	if (setup_workers(ws) != 0)
		return EXIT_FAIL;
	bool establishes = opt.mode != MODE_CONN;
	if (establishes)
		pthread_barrier_init(&barrier, NULL, opt.threads + 1);
	for (unsigned i = 0; i < opt.threads; i++) {
		if ((r = pthread_create(&ws[i].thread, NULL, worker_main, &ws[i])) != 0) {
			fprintf(stderr, PROG ": pthread_create: %s\n", strerror(r));
			return EXIT_FAIL;
		}
	}

	bool measured = true;
	if (establishes) {
		pthread_barrier_wait(&barrier);
		unsigned est = 0, target = 0;
		bool late = false;
		int64_t took = 0;
		for (unsigned i = 0; i < opt.threads; i++) {
			est += ws[i].established;
			target += ws[i].target;
			late |= ws[i].hit_deadline;
			if (ws[i].establish_ns > took)
				took = ws[i].establish_ns;
		}
		if (got_signal || late || est == 0 || atomic_load(&errors_total) >= opt.max_errors) {
			atomic_store(&skip_measure, true);
			measured = false;
		}
		if (opt.mode == MODE_IDLE) {
			if (measured)
				fprintf(stderr,
					PROG ": idle: %u of %u connections established in %.3f s; "
					     "holding them for up to %.1f s (SIGTERM or SIGINT ends it)\n",
					est, target, (double)took / 1e9, (double)opt.duration_ns / 1e9);
			else
				fprintf(stderr, PROG ": idle: only %u of %u connections established\n",
					est, target);
			fflush(stderr);
		}
		pthread_barrier_wait(&barrier);
	}
	for (unsigned i = 0; i < opt.threads; i++)
		pthread_join(ws[i].thread, NULL);

	struct totals t;
	add_up(ws, opt.threads, &t);
	const char *reason = stop_reason(&t, measured);
	double elapsed = measured && t.t_end > t.t0 ? (double)(t.t_end - t.t0) / 1e9 : 0.0;
	if (opt.json)
		report_json(&t, reason, elapsed);
	else
		report_text(&t, reason, elapsed);
	fflush(stdout);
	return t.error_sum == 0 && measured ? EXIT_OK : EXIT_FAIL;
}

/* --- the backend ---------------------------------------------------------- */

#define MAX_LISTENERS 16
#define PROXY_CAP 512u /* the largest PROXY header the backend takes */
#define LISTENER_TAG (1ULL << 63)
/*
 * What one connection may move in one turn of the backend's loop, in bytes
 * read and sent. A connection that used it without running dry waits for
 * the next turn, behind the others: one fast stream (a receiver on another
 * CPU can keep a socket full for ever) must not hold up every other
 * connection's answer, or a benchmark of the receiver's fairness would
 * measure the backend's.
 */
#define SERVE_TURN_BYTES IO_BUF

enum sstate { S_PROXY, S_HEAD, S_BODY, S_UPLOAD, S_DOWNLOAD };

struct serve_stats {
	uint64_t accepted, headers, requests, uploads, downloads, bytes_in, bytes_out;
	uint64_t errors[ERR_COUNT];
};

struct listener {
	struct sockaddr_storage addr;
	socklen_t len;
	bool proxy; /* connections start with a PROXY header */
	char text[NP_SOCKADDRSTRLEN];
};

struct sconn;

struct server {
	pthread_t thread;
	int epfd;
	int fds[MAX_LISTENERS];
	struct serve_stats st;
	uint8_t *buf;
	uint64_t turn_left; /* of SERVE_TURN_BYTES, for the connection being served */
	struct sconn *again, **again_tail; /* used their turn with more to do: served next turn */
};

struct sconn {
	int fd;
	uint8_t state; /* enum sstate */
	uint8_t op;
	bool close_after; /* once everything owed is sent */
	uint16_t pend_len;
	uint32_t body_left;
	uint64_t owed;	   /* pattern bytes still to send; UINT64_MAX: until EOF */
	uint64_t pat_pos;  /* offset of the next pattern byte in this response */
	uint64_t received; /* upload: bytes after the head */
	uint8_t *out;	   /* bytes to send before the pattern (echo, count) */
	uint32_t out_len, out_off;
	uint8_t *stash; /* input read but not yet handled: waits for the output */
	uint32_t stash_len, stash_off;
	struct server *srv;
	struct sconn *next_again;
	bool queued; /* in srv->again */
	bool dead;   /* closed while queued: freed when the queue reaches it */
	uint8_t pend[PROXY_CAP]; /* a PROXY header or a head arriving in pieces */
};

static struct listener listeners[MAX_LISTENERS];
static unsigned nlisteners;
static unsigned serve_threads = 1;
static int64_t serve_duration_ns;
static bool serve_json;

static void sconn_close(struct sconn *c, int err)
{
	if (err >= 0)
		c->srv->st.errors[err]++;
	close(c->fd);
	free(c->out);
	free(c->stash);
	c->out = c->stash = NULL;
	if (c->queued)
		c->dead = true; /* the queue still points at it */
	else
		free(c);
}

/* c used its turn with more to do: serve it again next turn, after the others. */
static void sconn_again(struct sconn *c)
{
	struct server *s = c->srv;

	if (c->queued)
		return;
	c->queued = true;
	c->next_again = NULL;
	if (!s->again)
		s->again_tail = &s->again;
	*s->again_tail = c;
	s->again_tail = &c->next_again;
}

/* Take n bytes from the turn's allowance (a system call is never cut short by it). */
static void sconn_spend(struct server *s, size_t n)
{
	s->turn_left = n < s->turn_left ? s->turn_left - n : 0;
}

static bool sconn_blocked(const struct sconn *c)
{
	return c->out_off < c->out_len || c->owed > 0;
}

/*
 * Send what is owed: first out[], then the pattern. 0 when all of it or as
 * much as the socket takes went out, -1 when c was closed (an error, or done
 * with close_after).
 */
static int sconn_flush(struct sconn *c)
{
	struct server *s = c->srv;

	while (sconn_blocked(c)) {
		ssize_t r;
		if (s->turn_left == 0) {
			sconn_again(c);
			return 0;
		}
		if (c->out_off < c->out_len) {
			r = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		} else {
			uint64_t n = c->owed < PATTERN_SPAN ? c->owed : PATTERN_SPAN;
			r = send(c->fd, pattern_at(c->pat_pos), n, MSG_NOSIGNAL);
		}
		if (r > 0) {
			s->st.bytes_out += (uint64_t)r;
			sconn_spend(s, (size_t)r);
			if (c->out_off < c->out_len) {
				c->out_off += (uint32_t)r;
				if (c->out_off == c->out_len) {
					free(c->out);
					c->out = NULL;
					c->out_len = c->out_off = 0;
				}
			} else {
				c->pat_pos += (uint64_t)r;
				if (c->owed != UINT64_MAX)
					c->owed -= (uint64_t)r;
			}
		} else if (r < 0 && errno == EINTR) {
			continue;
		} else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			return 0;
		} else {
			bool broken = errno == EPIPE || errno == ECONNRESET;
			/* A download may end with the client's reset: that is no error. */
			sconn_close(c, broken && c->state == S_DOWNLOAD ? -1 : broken ? ERR_RESET : ERR_OTHER);
			return -1;
		}
	}
	if (c->close_after) {
		sconn_close(c, -1);
		return -1;
	}
	return 0;
}

/* Queue bytes to send before anything else (echo, the upload count). */
static int sconn_queue(struct sconn *c, const uint8_t *p, size_t n)
{
	uint8_t *grown = realloc(c->out, c->out_len + n);
	if (!grown)
		return -1;
	memcpy(grown + c->out_len, p, n);
	c->out = grown;
	c->out_len += (uint32_t)n;
	return 0;
}

/* A complete head in pend[]: start the request. -1 when it is not one (c closed). */
static int sconn_start(struct sconn *c)
{
	const uint8_t *h = c->pend;

	c->pend_len = 0;
	c->op = h[3];
	c->body_left = get_be32(h + 4);
	c->pat_pos = 0;
	if (memcmp(h, "NPB", 3) != 0 || (h[12] & ~FLAG_CLOSE) || h[13] || h[14] || h[15] ||
	    (c->op != OP_RESPOND && c->op != OP_ECHO && c->op != OP_UPLOAD && c->op != OP_DOWNLOAD) ||
	    ((c->op == OP_UPLOAD || c->op == OP_DOWNLOAD) && c->body_left != 0) ||
	    (c->op == OP_ECHO && get_be32(h + 8) != c->body_left)) {
		sconn_close(c, ERR_BAD_REQUEST);
		return -1;
	}
	c->close_after = h[12] & FLAG_CLOSE;
	switch (c->op) {
	case OP_UPLOAD:
		c->srv->st.uploads++;
		c->received = 0;
		c->state = S_UPLOAD;
		break;
	case OP_DOWNLOAD:
		c->srv->st.downloads++;
		c->owed = UINT64_MAX;
		c->state = S_DOWNLOAD;
		break;
	default:
		c->srv->st.requests++;
		c->state = S_BODY;
		if (c->body_left == 0) {
			c->owed = c->op == OP_RESPOND ? get_be32(h + 8) : 0;
			c->state = S_HEAD;
		}
	}
	return 0;
}

/*
 * Handle n bytes from the client. Returns how many were used: fewer than n
 * when a response must go out before the next request is read. -1 when c
 * was closed.
 */
static ssize_t sconn_feed(struct sconn *c, const uint8_t *p, size_t n)
{
	size_t used = 0;

	c->srv->st.bytes_in += n;
	while (used < n) {
		size_t k, left = n - used;
		if (c->state == S_DOWNLOAD) { /* nothing is expected: ignore it */
			used = n;
			break;
		}
		if (c->state == S_UPLOAD) {
			c->received += left;
			used = n;
			break;
		}
		if (c->state != S_BODY && sconn_blocked(c))
			break;
		switch (c->state) {
		case S_PROXY: {
			struct np_header hdr;
			k = left < PROXY_CAP - c->pend_len ? left : PROXY_CAP - c->pend_len;
			memcpy(c->pend + c->pend_len, p + used, k);
			int r = np_parse(c->pend, c->pend_len + k, &hdr);
			if (r == NP_EAGAIN && c->pend_len + k < PROXY_CAP) {
				c->pend_len = (uint16_t)(c->pend_len + k);
				used += k;
				break;
			}
			if (r < 0) {
				sconn_close(c, ERR_BAD_HEADER);
				return -1;
			}
			/* The header is longer than what an earlier call saw: r > pend_len. */
			used += (size_t)r - c->pend_len;
			c->pend_len = 0;
			c->state = S_HEAD;
			c->srv->st.headers++;
			break;
		}
		case S_HEAD:
			k = left < HEAD_LEN - c->pend_len ? left : HEAD_LEN - c->pend_len;
			memcpy(c->pend + c->pend_len, p + used, k);
			c->pend_len = (uint16_t)(c->pend_len + k);
			used += k;
			if (c->pend_len == HEAD_LEN && sconn_start(c) != 0)
				return -1;
			break;
		case S_BODY:
			k = left < c->body_left ? left : c->body_left;
			if (c->op == OP_ECHO && sconn_queue(c, p + used, k) != 0) {
				sconn_close(c, ERR_OTHER);
				return -1;
			}
			c->body_left -= (uint32_t)k;
			used += k;
			if (c->body_left == 0) {
				if (c->op == OP_RESPOND)
					c->owed = get_be32(c->pend + 8);
				c->state = S_HEAD;
			}
			if (c->op == OP_ECHO && sconn_flush(c) != 0)
				return -1; /* echo: back as it arrives */
			break;
		}
	}
	return (ssize_t)used;
}

/* The client sent its FIN. */
static void sconn_eof(struct sconn *c)
{
	uint8_t count[8];

	switch (c->state) {
	case S_UPLOAD:
		for (int i = 0; i < 8; i++)
			count[i] = (uint8_t)(c->received >> (56 - 8 * i));
		if (sconn_queue(c, count, sizeof(count)) != 0) {
			sconn_close(c, ERR_OTHER);
			return;
		}
		c->close_after = true;
		sconn_flush(c);
		return;
	case S_DOWNLOAD:
		sconn_close(c, -1);
		return;
	case S_HEAD:
		if (c->pend_len == 0 && c->stash_off == c->stash_len) {
			/* Between requests: done, once what is owed is sent. */
			c->close_after = true;
			sconn_flush(c);
			return;
		}
		/* fall through */
	default:
		sconn_close(c, ERR_SHORT);
	}
}

/* Keep input for later: the response to the request before it is still going out. */
static int sconn_stash(struct sconn *c, const uint8_t *p, size_t n)
{
	uint8_t *copy = malloc(n);
	if (!copy)
		return -1;
	memcpy(copy, p, n);
	free(c->stash);
	c->stash = copy;
	c->stash_len = (uint32_t)n;
	c->stash_off = 0;
	return 0;
}

/*
 * Whatever is possible now, within the turn's allowance: send what is owed,
 * handle stashed input, read. When the allowance runs out first, c is queued
 * for the next turn: its edge-triggered readiness is not used up.
 */
static void sconn_pump(struct sconn *c)
{
	struct server *s = c->srv;

	s->turn_left = SERVE_TURN_BYTES;
	for (;;) {
		if (sconn_flush(c) != 0)
			return;
		if (c->stash) {
			ssize_t u = sconn_feed(c, c->stash + c->stash_off, c->stash_len - c->stash_off);
			if (u < 0)
				return;
			c->stash_off += (uint32_t)u;
			if (c->stash_off == c->stash_len) {
				free(c->stash);
				c->stash = NULL;
				c->stash_len = c->stash_off = 0;
			} else if (sconn_flush(c) != 0 || sconn_blocked(c)) {
				return; /* the socket is full: EPOLLOUT brings us back */
			}
			continue;
		}
		if (sconn_blocked(c) && c->state != S_DOWNLOAD)
			return; /* read more once the answer is out */
		if (s->turn_left == 0) {
			sconn_again(c);
			return;
		}
		ssize_t r = recv(c->fd, s->buf, IO_BUF, 0);
		if (r > 0) {
			sconn_spend(s, (size_t)r);
			ssize_t u = sconn_feed(c, s->buf, (size_t)r);
			if (u < 0)
				return;
			if (u < r && sconn_stash(c, s->buf + u, (size_t)(r - u)) != 0) {
				sconn_close(c, ERR_OTHER);
				return;
			}
		} else if (r == 0) {
			sconn_eof(c);
			return;
		} else if (errno == EINTR) {
			continue;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			return;
		} else {
			sconn_close(c, errno == ECONNRESET ? ERR_RESET : ERR_OTHER);
			return;
		}
	}
}

static void serve_accept(struct server *s, unsigned li)
{
	int one = 1;

	for (;;) {
		int fd = accept4(s->fds[li], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				/* Out of descriptors: wait for some to close rather than spin. */
				s->st.errors[ERR_OTHER]++;
				struct timespec ts = {.tv_nsec = 10 * 1000000};
				nanosleep(&ts, NULL);
			}
			return;
		}
		struct sconn *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			s->st.errors[ERR_OTHER]++;
			continue;
		}
		/* Each response goes out in one send(): Nagle would only delay the next. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->fd = fd;
		c->srv = s;
		c->state = listeners[li].proxy ? S_PROXY : S_HEAD;
		s->st.accepted++;
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
					 .data.ptr = c};
		if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
			sconn_close(c, ERR_OTHER);
			continue;
		}
	}
}

static void *serve_main(void *arg)
{
	struct server *s = arg;
	struct epoll_event ev[256];
	int64_t end = serve_duration_ns ? now_ns() + serve_duration_ns : INT64_MAX;

	while (!got_signal && now_ns() < end) {
		/* Connections queued for another turn: look for events, but do not wait. */
		int n = epoll_wait(s->epfd, ev, (int)(sizeof(ev) / sizeof(ev[0])),
				   s->again ? 0 : (int)(WAKE_NS / 1000000));
		for (int i = 0; i < n; i++) {
			if (ev[i].data.u64 & LISTENER_TAG)
				serve_accept(s, (unsigned)(ev[i].data.u64 & ~LISTENER_TAG));
			else if (!((struct sconn *)ev[i].data.ptr)->dead)
				sconn_pump(ev[i].data.ptr);
		}
		/* Those queued before this turn; those they queue again wait for the next. */
		struct sconn *c = s->again;
		s->again = NULL;
		while (c) {
			struct sconn *next = c->next_again;
			c->queued = false;
			if (c->dead)
				free(c);
			else
				sconn_pump(c);
			c = next;
		}
	}
	return NULL;
}

static int open_listener(const struct listener *l)
{
	int one = 1;
	int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	/* One socket per thread on the same address: the kernel spreads connections. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
	    bind(fd, (const struct sockaddr *)&l->addr, l->len) != 0 || listen(fd, 65535) != 0) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

static void serve_usage(FILE *out)
{
	fputs("usage: " PROG " serve [-l ADDR:PORT]... [-p ADDR:PORT]... [-t N] [-d SECONDS] [-j]\n"
	      "\n"
	      "The backend for " PROG ": answers requests (R: a fixed response of the\n"
	      "size asked for, E: echo), uploads (U: counts the bytes) and downloads\n"
	      "(D: sends until the client's end of file). See " PROG "(1) for the protocol.\n"
	      "It runs until SIGTERM or SIGINT (or -d), then prints what it served.\n"
	      "\n"
	      "options:\n"
	      "  -l, --listen ADDR:PORT        listen there ([v6addr]:port for IPv6)\n"
	      "  -p, --listen-proxy ADDR:PORT  listen there for connections that start with\n"
	      "                                a PROXY header (v1 or v2, at most 512 bytes)\n"
	      "  -t, --threads N               threads, each with its own listening sockets\n"
	      "                                (SO_REUSEPORT); default 1\n"
	      "  -d, --duration SECONDS        stop after SECONDS; default: at a signal\n"
	      "  -j, --json                    print the final counts as one JSON object on\n"
	      "                                standard output\n"
	      "  -h, --help                    print this help and exit\n",
	      out);
}

static int add_listener(const char *arg, bool proxy)
{
	struct listener *l = &listeners[nlisteners];

	if (nlisteners == MAX_LISTENERS)
		return usage_error("at most 16 listening addresses: '%s'", arg);
	if (parse_host_port(arg, &l->addr, &l->len) != 0)
		return usage_error("-%c: not ADDR:PORT or [IPv6]:PORT: '%s'", proxy ? 'p' : 'l', arg);
	l->proxy = proxy;
	nlisteners++;
	return EXIT_OK;
}

static void serve_report(struct server *ss)
{
	struct serve_stats t;
	uint64_t errors = 0;

	memset(&t, 0, sizeof(t));
	for (unsigned i = 0; i < serve_threads; i++) {
		const struct serve_stats *s = &ss[i].st;
		t.accepted += s->accepted;
		t.headers += s->headers;
		t.requests += s->requests;
		t.uploads += s->uploads;
		t.downloads += s->downloads;
		t.bytes_in += s->bytes_in;
		t.bytes_out += s->bytes_out;
		for (int k = 0; k < ERR_COUNT; k++)
			t.errors[k] += s->errors[k];
	}
	for (int k = 0; k < ERR_COUNT; k++)
		errors += t.errors[k];
	if (serve_json) {
		printf("{\"accepted\":%" PRIu64 ",\"proxy_headers\":%" PRIu64 ",\"requests\":%" PRIu64
		       ",\"uploads\":%" PRIu64 ",\"downloads\":%" PRIu64 ",\"bytes_in\":%" PRIu64
		       ",\"bytes_out\":%" PRIu64 ",",
		       t.accepted, t.headers, t.requests, t.uploads, t.downloads, t.bytes_in,
		       t.bytes_out);
		print_error_json(t.errors, SERVER);
		printf("}\n");
		fflush(stdout);
		return;
	}
	fprintf(stderr,
		PROG " serve: %" PRIu64 " connections, %" PRIu64 " PROXY headers, %" PRIu64
		     " requests, %" PRIu64 " uploads, %" PRIu64 " downloads, %" PRIu64
		     " bytes in, %" PRIu64 " bytes out; errors: %" PRIu64,
		t.accepted, t.headers, t.requests, t.uploads, t.downloads, t.bytes_in, t.bytes_out,
		errors);
	for (int k = 0; k < ERR_COUNT; k++)
		if (t.errors[k])
			fprintf(stderr, ", %s %" PRIu64, error_kinds[k].key, t.errors[k]);
	fputc('\n', stderr);
}

static int serve_cmd(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"listen", required_argument, NULL, 'l'},
		{"listen-proxy", required_argument, NULL, 'p'},
		{"threads", required_argument, NULL, 't'},
		{"duration", required_argument, NULL, 'd'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint64_t v;
	int c, r;

	while ((c = getopt_long(argc, argv, "l:p:t:d:jh", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
		case 'p':
			if ((r = add_listener(optarg, c == 'p')) != EXIT_OK)
				return r;
			break;
		case 't':
			if (parse_number(optarg, false, 1, MAX_THREADS, &v) != 0)
				return usage_error("-t: not a number from 1 to 256: '%s'", optarg);
			serve_threads = (unsigned)v;
			break;
		case 'd':
			if (parse_seconds(optarg, &serve_duration_ns) != 0)
				return usage_error("-d: not a number of seconds above 0: '%s'", optarg);
			break;
		case 'j':
			serve_json = true;
			break;
		case 'h':
			serve_usage(stdout);
			return EXIT_OK;
		default:
			return usage_error(NULL);
		}
	}
	if (optind < argc)
		return usage_error("serve: unexpected argument: '%s'", argv[optind]);
	if (nlisteners == 0)
		return usage_error("serve: give at least one -l or -p address");
	if (raise_fd_limit(64, "serve") != 0)
		return EXIT_FAIL;
	pattern_init();

	catch_signals();

	struct server *ss = calloc(serve_threads, sizeof(*ss));
	if (!ss)
		return EXIT_FAIL;
	for (unsigned i = 0; i < serve_threads; i++) {
		struct server *s = &ss[i];
		s->epfd = epoll_create1(EPOLL_CLOEXEC);
		s->buf = malloc(IO_BUF);
		if (s->epfd < 0 || !s->buf) {
			fprintf(stderr, PROG " serve: %s\n", strerror(errno));
			return EXIT_FAIL;
		}
		for (unsigned li = 0; li < nlisteners; li++) {
			struct listener *l = &listeners[li];
			s->fds[li] = open_listener(l);
			if (s->fds[li] < 0) {
				np_format_sockaddr(l->text, sizeof(l->text), (const struct sockaddr *)&l->addr, l->len);
				fprintf(stderr, PROG " serve: listen on %s: %s\n", l->text, strerror(errno));
				return EXIT_FAIL;
			}
			/* Port 0 asks the kernel: the others threads then join the same port. */
			l->len = sizeof(l->addr);
			getsockname(s->fds[li], (struct sockaddr *)&l->addr, &l->len);
			struct epoll_event ev = {.events = EPOLLIN, .data.u64 = LISTENER_TAG | li};
			epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->fds[li], &ev);
		}
	}
	fprintf(stderr, PROG " serve: listening on");
	for (unsigned li = 0; li < nlisteners; li++) {
		np_format_sockaddr(listeners[li].text, sizeof(listeners[li].text),
				   (const struct sockaddr *)&listeners[li].addr, listeners[li].len);
		fprintf(stderr, "%s %s%s", li ? "," : "", listeners[li].text,
			listeners[li].proxy ? " (PROXY header first)" : "");
	}
	fprintf(stderr, "; %u thread%s\n", serve_threads, serve_threads == 1 ? "" : "s");
	fflush(stderr);
	for (unsigned i = 0; i < serve_threads; i++) {
		if ((r = pthread_create(&ss[i].thread, NULL, serve_main, &ss[i])) != 0) {
			fprintf(stderr, PROG " serve: pthread_create: %s\n", strerror(r));
			return EXIT_FAIL;
		}
	}
	for (unsigned i = 0; i < serve_threads; i++)
		pthread_join(ss[i].thread, NULL);
	serve_report(ss);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "serve") == 0)
		return serve_cmd(argc - 1, argv + 1);
	return client_main(argc, argv);
}
