/*
 * client.c - the load generator's engine: each thread's epoll loop over its
 * connection slots, opening connections, sending requests and streams,
 * checking what comes back, timing it, and stopping at the first bound.
 * A connection lives and dies in one thread; threads share only the -n
 * budget and the error count (atomics) and meet main at two barriers.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bench.h"
#include "client.h"
#include "wire.h"

struct client_options opt;
const char *const mode_name[MODE_IDLE + 1] = {"conn", "kept", "up", "down", "idle"};

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

static _Atomic uint64_t issued;	   /* operations (bytes for up/down) taken from -n */
static _Atomic uint32_t pool_next; /* the next --bind address */
_Atomic bool budget_spent;
_Atomic uint64_t errors_total;
_Atomic bool skip_measure;
pthread_barrier_t barrier;
uint8_t *request_keep, *request_close;

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

bool streaming(void)
{
	return opt.mode == MODE_UP || opt.mode == MODE_DOWN;
}

uint64_t response_want(void)
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

void *worker_main(void *arg)
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

/* This thread's share of n: an even split, the first ones taking the remainder. */
static unsigned share(uint64_t n, unsigned i)
{
	return (unsigned)(n / opt.threads + (i < n % opt.threads ? 1 : 0));
}

int setup_workers(struct worker *ws)
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
