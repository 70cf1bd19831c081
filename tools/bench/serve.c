/*
 * serve.c - the backend (serve.h): one epoll loop per thread, each with its
 * own SO_REUSEPORT listening sockets; requests answered one at a time, in
 * order, within a budget per connection per turn.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "netproxy.h"
#include "bench.h"
#include "errors.h"
#include "serve.h"
#include "wire.h"

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

int serve_cmd(int argc, char **argv)
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
