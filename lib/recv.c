/*
 * recv.c - np_recv_header(), the library's only system calls: read exactly
 * one header from a connected socket before a deadline.
 *
 * Peeking alone cannot wait for the rest of a header: poll() reports the
 * peeked bytes as readable again at once, and the loop would spin. So every
 * byte known to belong to the header is consumed as soon as it is known,
 * and the next peek looks only at what is new. While np_parse() says
 * NP_EAGAIN, every byte seen is a header byte (a v1 line before its CRLF, a
 * v2 header before 16 + len); once the header is complete, exactly its
 * remaining bytes are consumed. Application data is never taken.
 */
#include <errno.h>
#include <poll.h>
#include <time.h>

#include "internal.h"

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
			return 0; /* readable, hung up or in error: recv() will tell which */
		if (n == 0)
			continue; /* the deadline check above ends the wait */
		if (errno != EINTR)
			return NP_ESYS;
	}
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

int np_recv_header(int fd, void *buf, size_t cap, struct np_header *hdr, int timeout_ms)
{
	uint8_t *b = buf;
	size_t have = 0; /* header bytes consumed so far, at the start of buf */
	long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	int r;

	if (cap == 0)
		return NP_EINVAL;
	for (;;) {
		/* Look before waiting: the header is usually there already. */
		ssize_t n = recv(fd, b + have, cap - have, MSG_PEEK | MSG_DONTWAIT);
		if (n == 0)
			return NP_ECLOSED;
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				return NP_ESYS;
			if ((r = wait_readable(fd, deadline)) != 0)
				return r;
			continue;
		}

		size_t seen = have + (size_t)n;
		r = np_parse_max(b, seen, cap, hdr);
		if (r > 0) {
			/* The parse pointed hdr->tlv into buf, where the bytes will stay. */
			int c = consume(fd, b + have, (size_t)r - have);
			return c ? c : r;
		}
		if (r != NP_EAGAIN)
			return r;
		if (seen == cap)
			return NP_ETOOBIG;
		if ((r = consume(fd, b + have, (size_t)n)) != 0)
			return r;
		have = seen;
	}
}
