/*
 * recv.c - the library's only system calls: np_try_recv_header(), one
 * non-blocking attempt at exactly one header on a connected socket, and
 * np_recv_header(), the same with a wait and a deadline.
 *
 * The socket's receive queue is the buffer. Each attempt peeks at what has
 * arrived (MSG_PEEK), parses it from the start, and consumes the header's
 * bytes only once the header is complete; until then it consumes nothing,
 * so the caller keeps no state between attempts and a byte of application
 * data is never taken. The cost of starting over is a peek and a parse of
 * bytes already seen, which a header, smaller than a segment nearly always,
 * makes once.
 *
 * Peeked bytes stay readable, so a level-triggered poll() or epoll would
 * report the socket again at once and a loop would spin until the rest came.
 * While a header is incomplete, the attempt therefore raises SO_RCVLOWAT to
 * one byte more than it saw: TCP then reports the socket readable only when
 * more has arrived, or the peer has closed. A complete header sets it back
 * to 1, the default. (AF_UNIX sockets ignore SO_RCVLOWAT in poll; see
 * np_recv_header() for what that costs there.)
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <time.h>

#include "internal.h"

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int set_rcvlowat(int fd, int n)
{
	return setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &n, sizeof(n)) == 0 ? 0 : NP_ESYS;
}

/* Consume n bytes already seen by a peek into dst: they are in the socket buffer. */
static int consume(int fd, uint8_t *dst, size_t n)
{
	while (n > 0) {
		ssize_t r = recv(fd, dst, n, MSG_DONTWAIT);
		if (r > 0) {
			dst += r;
			n -= (size_t)r;
		} else if (r == 0) {
			return NP_ECLOSED;
		} else if (errno != EINTR) {
			return NP_ESYS;
		}
	}
	return 0;
}

/*
 * One attempt; *seen (when not NULL) gets the number of bytes the peek saw,
 * which np_recv_header() uses to tell new bytes from old ones.
 */
static int try_recv(int fd, uint8_t *buf, size_t cap, struct np_header *hdr, size_t *seen)
{
	ssize_t n;
	int r;

	if (buf == NULL || hdr == NULL || cap == 0)
		return NP_EINVAL;
	do
		n = recv(fd, buf, cap, MSG_PEEK | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (seen != NULL)
		*seen = n > 0 ? (size_t)n : 0;
	if (n == 0)
		return NP_ECLOSED;
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? NP_EAGAIN : NP_ESYS;

	r = np_parse_max(buf, (size_t)n, cap, hdr);
	if (r > 0) {
		/*
		 * The parse pointed hdr->tlv into buf; consuming writes the same
		 * bytes over themselves. SO_RCVLOWAT goes back to 1 whether or not
		 * an earlier attempt raised it: finding out would cost as much.
		 */
		int c = consume(fd, buf, (size_t)r);
		if (c == 0)
			c = set_rcvlowat(fd, 1);
		return c ? c : r;
	}
	if (r != NP_EAGAIN)
		return r;
	if ((size_t)n == cap)
		return NP_ETOOBIG;

	/*
	 * Incomplete. A peer that has shut down its side will send no more:
	 * say so now rather than after the deadline. POLLRDHUP is what tells
	 * that apart from bytes waiting, which POLLIN also reports.
	 */
	struct pollfd pfd = {.fd = fd, .events = POLLRDHUP};
	if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP)))
		return NP_ECLOSED;
	/*
	 * n is what the receive queue held, far below INT_MAX; the kernel caps
	 * SO_RCVLOWAT at half the largest receive buffer anyway.
	 */
	r = set_rcvlowat(fd, n < INT_MAX ? (int)n + 1 : INT_MAX);
	return r ? r : NP_EAGAIN;
}

int np_try_recv_header(int fd, void *buf, size_t cap, struct np_header *hdr)
{
	return try_recv(fd, buf, cap, hdr, NULL);
}

/* Wait until fd is readable or the deadline passes (deadline < 0: never). */
static int wait_readable(int fd, long long deadline)
{
	for (;;) {
		int timeout = -1;

		if (deadline >= 0) {
			long long left = deadline - now_ms();
			if (left <= 0)
				return NP_ETIMEDOUT;
			timeout = left > 1000000000 ? 1000000000 : (int)left;
		}
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int n = poll(&pfd, 1, timeout);
		if (n > 0)
			return 0; /* readable, hung up or in error: the next attempt tells which */
		if (n == 0)
			continue; /* the deadline check above ends the wait */
		if (errno != EINTR)
			return NP_ESYS;
	}
}

/* Sleep ms milliseconds, or until the deadline if that comes first. */
static int pause_ms(long long deadline, int ms)
{
	if (deadline >= 0) {
		long long left = deadline - now_ms();
		if (left <= 0)
			return NP_ETIMEDOUT;
		if (left < ms)
			ms = (int)left;
	}
	poll(NULL, 0, ms);
	return 0;
}

/* How long to wait before looking again when readiness brought nothing new. */
#define NP_RECHECK_MS 5

int np_recv_header(int fd, void *buf, size_t cap, struct np_header *hdr, int timeout_ms)
{
	long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	size_t seen = 0, before = 0;
	int r;

	for (;;) {
		/* Look before waiting: the header is usually there already. */
		r = try_recv(fd, buf, cap, hdr, &seen);
		if (r != NP_EAGAIN)
			return r;
		/*
		 * On TCP the raised SO_RCVLOWAT makes poll() wait for new bytes,
		 * so readiness always brings some. A socket that ignores it
		 * (AF_UNIX) is readable again at once with the same bytes: then
		 * look again every few milliseconds rather than spin.
		 */
		if (seen > 0 && seen == before)
			r = pause_ms(deadline, NP_RECHECK_MS);
		else
			r = wait_readable(fd, deadline);
		if (r != 0)
			return r;
		before = seen;
	}
}
