/*
 * relay.c - move bytes both ways between client and backend, and return a
 * verdict; the connection (conn.c) decides what it means for its life.
 *
 * Sockets are edge-triggered and registered once for both directions; each
 * side remembers the readiness epoll reported and a syscall returning EAGAIN
 * has not taken back yet. A direction holds at most one buffer of data:
 * nothing more is read from a side until what was read from it has been
 * written to the other. That is the backpressure, and it bounds memory per
 * direction; an idle connection holds no buffer.
 *
 * Each direction reads into a 16 KiB buffer, enough for any message. A read
 * that fills its buffer means bulk data: the next reads take a bulk buffer
 * (buffers.h), until a read would have fit a small one again.
 *
 * A relay reads at most NPD_TURN_BYTES from each side per turn of the loop.
 * When a side's budget runs out before it has run dry, its readiness is not
 * used up, and no new edge will say so: the verdict is STARVED, and the
 * caller must come back at a later turn. Each side has a budget of its own,
 * so that a direction served first cannot starve the other.
 *
 * A direction ends when its source has sent FIN and everything before it has
 * been written and followed by our FIN. A side that fails (reset, broken
 * pipe) ends the direction into it at once, since nothing can reach it any
 * more, and the direction out of it once what was read from it before the
 * failure has been delivered: an error on one side never costs the other
 * side a byte it was owed. The relay is over when both directions ended.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "relay.h"

_Static_assert(NPD_TURN_BYTES >= NPD_BULK_SIZE, "a bulk read must fit in a turn's budget");

void npd_relay_init(struct npd_relay *r, struct npd_buf_pool *pool, int client_fd, int backend_fd)
{
	*r = (struct npd_relay){.pool = pool};
	r->client.fd = client_fd;
	r->backend.fd = backend_fd;
	/* A UNIX socket's side says otherwise once it is known to be one (conn.c). */
	r->client.short_read_drains = r->backend.short_read_drains = true;
}

void npd_side_note(struct npd_side *s, uint32_t events)
{
	/* An error or hang-up is both: the next read or write says which. */
	if (events & (EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
		s->readable = true;
	/*
	 * A FIN that came with the data brings no edge of its own after we read
	 * the data: remember it, or the end would never be read.
	 */
	if (events & (EPOLLRDHUP | EPOLLERR | EPOLLHUP))
		s->fin_seen = true;
	if (events & EPOLLERR)
		s->err_seen = true;
	if (events & EPOLLPRI) /* urgent data: the next reads may stop at its mark */
		s->short_read_drains = false;
	if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
		s->writable = true;
}

/*
 * After a failed read or write on side s: true to try again (EINTR), false
 * to stop for now. EAGAIN clears *ready; anything else marks s as failed.
 */
static bool retry(struct npd_side *s, bool *ready)
{
	if (errno == EINTR)
		return true;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		*ready = false;
	else if (!s->error)
		s->error = errno;
	return false;
}

/*
 * A read failed: nothing more will come from src. (A failed write alone does
 * not end reading: a peer that reset us may have sent data before, and the
 * kernel still hands it out.)
 */
static bool read_failed(struct npd_side *src)
{
	if (retry(src, &src->readable))
		return true;
	if (src->error)
		src->eof = true;
	return false;
}

void npd_side_discard(struct npd_relay *r, struct npd_side *s)
{
	if (s->in) {
		npd_buf_put(r->pool, s->in);
		s->in = NULL;
	}
}

/* A new turn gives each side its budget. */
static void new_turn(struct npd_relay *r, uint64_t turn)
{
	if (r->turn != turn) {
		r->turn = turn;
		r->client.budget = r->backend.budget = NPD_TURN_BYTES;
	}
}

size_t npd_relay_flush(struct npd_relay *r, struct npd_side *src, struct npd_side *dst)
{
	struct npd_buf *b = src->in;
	size_t sent = 0;

	while (b && b->off < b->len) {
		/*
		 * When src has ended, our FIN follows these bytes at once:
		 * MSG_MORE lets the kernel put it in their last segment, one
		 * packet and one wake-up of the peer instead of two. (The FIN,
		 * or the close that sends it, pushes them out.)
		 */
		ssize_t n = send(dst->fd, b->data + b->off, b->len - b->off,
				 MSG_NOSIGNAL | (src->eof ? MSG_MORE : 0));
		if (n < 0) {
			if (retry(dst, &dst->writable))
				continue;
			if (dst->error)
				npd_side_discard(r, src);
			return sent;
		}
		b->off += (uint32_t)n;
		sent += (size_t)n;
		if (b->off == b->len) { /* an idle side holds no buffer */
			npd_buf_put(r->pool, b);
			src->in = b = NULL;
		}
	}
	return sent;
}

/*
 * Move what src has to say to dst. Returns true when anything happened; sets
 * *starved when src is still readable but the turn's budget is spent.
 */
static bool pump(struct npd_relay *r, struct npd_side *src, struct npd_side *dst, bool *starved)
{
	bool progress = false;

	if (dst->error) {
		npd_side_discard(r, src);
		return false;
	}
	for (;;) {
		struct npd_buf *b = src->in;
		ssize_t n;

		/* What was read goes out first. */
		if (b && b->off < b->len) {
			if (!dst->writable)
				return progress;
			progress |= npd_relay_flush(r, src, dst) > 0;
			if (src->in)
				return progress; /* dst takes no more for now */
			if (dst->error)
				return progress;
			continue;
		}

		/* Nothing in flight: pass on an end, or read more. */
		if (src->eof) {
			if (!dst->shut) {
				/*
				 * Half-close: the other side may still talk, so only our
				 * write end shuts. Unless it has said all it had to and it
				 * was all delivered: then both ways are over, the close
				 * comes next and its FIN is the same, a system call less.
				 */
				if (!(dst->eof && (src->shut || src->error)))
					shutdown(dst->fd, SHUT_WR);
				dst->shut = true;
				progress = true;
			}
			return progress;
		}
		if (!src->readable)
			return progress;
		uint32_t want = src->budget;
		if (want == 0) {
			*starved = true;
			return progress;
		}
		if (!b && !(b = src->in = npd_buf_get(r->pool, src->bulk))) {
			src->error = ENOMEM;
			src->eof = true;
			continue;
		}
		if (want > b->cap)
			want = b->cap;
		n = recv(src->fd, b->data, want, 0);
		if (n > 0) {
			b->off = 0;
			b->len = (uint32_t)n;
			src->bytes += (uint64_t)n;
			src->budget -= (uint32_t)n;
			progress = true;
			if ((size_t)n == want) {
				/* All it was asked for: there may be more. */
				if (want == b->cap)
					src->bulk = true;
				continue;
			}
			if ((size_t)n < NPD_BUF_SIZE)
				src->bulk = false;
			if (!src->short_read_drains)
				continue; /* more may be waiting: read until EAGAIN */
			if (!src->fin_seen) {
				src->readable = false; /* drained: new data brings a new edge */
			} else if (!src->err_seen) {
				/*
				 * Its FIN had arrived before this read, and nothing can
				 * follow a FIN: a short read took the last bytes, and the
				 * recv() that would say 0 is not needed. (After an error,
				 * that recv() says which.)
				 */
				src->eof = true;
				src->readable = false;
			}
			continue;
		}
		npd_buf_put(r->pool, b);
		src->in = NULL;
		if (n == 0) {
			src->eof = true;
			progress = true;
		} else if (!read_failed(src) && !src->eof) {
			return progress;
		}
	}
}

const struct npd_side *npd_relay_failed(const struct npd_relay *r)
{
	return r->client.error ? &r->client : r->backend.error ? &r->backend : NULL;
}

/* The direction from src to dst has ended. */
static bool ended(const struct npd_side *src, const struct npd_side *dst)
{
	return dst->error || (src->eof && dst->shut);
}

static enum npd_relay_verdict over(const struct npd_relay *r)
{
	return npd_relay_failed(r) ? NPD_RELAY_FAILED : NPD_RELAY_DONE;
}

enum npd_relay_verdict npd_relay_move(struct npd_relay *r, uint64_t turn)
{
	bool moved = false, starved = false, progress;

	new_turn(r, turn);
	do {
		progress = pump(r, &r->client, &r->backend, &starved);
		progress |= pump(r, &r->backend, &r->client, &starved);
		moved |= progress;
	} while (progress);

	if (ended(&r->client, &r->backend) && ended(&r->backend, &r->client)) {
		/*
		 * Closing a socket with unread input sends a reset, and a reset makes
		 * the peer's kernel drop what it has not read yet: the end of what we
		 * just sent the client. When the client may still be sending (the
		 * backend failed first), it must be drained after our FIN, for a
		 * while, and closed only then: the lingering close web servers do.
		 */
		if (!r->client.eof && !r->client.error && r->client.shut)
			return NPD_RELAY_LINGER;
		return over(r);
	}
	if (starved)
		return NPD_RELAY_STARVED;
	return moved ? NPD_RELAY_MOVED : NPD_RELAY_IDLE;
}

enum npd_relay_verdict npd_relay_drain(struct npd_relay *r, uint64_t turn)
{
	struct npd_side *c = &r->client;
	char sink[4096];

	new_turn(r, turn);
	while (c->readable) {
		if (c->budget == 0)
			return NPD_RELAY_STARVED;
		ssize_t n = recv(c->fd, sink, c->budget < sizeof(sink) ? c->budget : sizeof(sink), 0);
		if (n > 0) {
			c->budget -= (uint32_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->readable = false;
			return NPD_RELAY_IDLE; /* its next edge, or the caller's timer, brings us back */
		}
		return over(r); /* its end, or its error: nothing is lost by closing now */
	}
	return NPD_RELAY_IDLE;
}
