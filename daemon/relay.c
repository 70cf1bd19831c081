/*
 * relay.c - move bytes both ways between client and backend.
 *
 * Sockets are edge-triggered and registered once for both directions; each
 * side remembers the readiness epoll reported and a syscall returning EAGAIN
 * has not taken back yet. A direction holds at most one buffer or one pipe's
 * worth of data: nothing more is read from a side until what was read from it
 * has been written to the other. That is the backpressure, and it bounds
 * memory per direction; an idle connection holds neither buffer nor pipe.
 *
 * Each direction starts by copying through a user-space buffer, which costs
 * the fewest syscalls for small messages. A read that fills the whole buffer
 * means bulk data: the direction then moves to splice() through a pipe,
 * which skips the copies, until the source runs dry and the pipe goes back
 * to the worker's pool.
 *
 * A FIN is passed on once everything before it is written; the connection
 * closes when both ways have ended.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>

#include "conn.h"

/* Set when a direction failed: which side, and what the syscall said. */
struct relay_error {
	const char *side;
	int err;
};

static const char *side_name(const struct npd_conn *c, const struct npd_side *s)
{
	return s == &c->client ? "client" : "backend";
}

/*
 * Handle a failed read or write on side s: false when the caller should
 * stop for now (EAGAIN), true to try again (EINTR); any other error is
 * recorded in e, and false returned.
 */
static bool failed(const struct npd_conn *c, const struct npd_side *s, bool *ready,
		   struct relay_error *e)
{
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		*ready = false;
		return false;
	}
	if (errno == EINTR)
		return true;
	e->side = side_name(c, s);
	e->err = errno;
	return false;
}

/* Move what src has to say to dst. Returns true when anything happened. */
static bool pump(struct npd_conn *c, struct npd_side *src, struct npd_side *dst,
		 struct relay_error *e)
{
	bool progress = false;

	for (;;) {
		struct npd_buf *b = src->in;
		struct npd_pipe *p = src->pipe;
		ssize_t n;

		/* What was read goes out first, from the buffer, then from the pipe. */
		if (b && b->off < b->len) {
			if (!dst->writable)
				return progress;
			n = send(dst->fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL);
			if (n < 0) {
				if (failed(c, dst, &dst->writable, e))
					continue;
				return progress;
			}
			b->off += (uint32_t)n;
			progress = true;
			if (b->off == b->len) {
				npd_buf_put(c->w, b);
				src->in = NULL;
			}
			continue;
		}
		if (p && p->len) {
			if (!dst->writable)
				return progress;
			n = splice(p->rd, NULL, dst->fd, NULL, p->len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n < 0) {
				if (failed(c, dst, &dst->writable, e))
					continue;
				return progress;
			}
			p->len -= (uint32_t)n;
			progress = true;
			continue;
		}

		/* Nothing in flight: pass on an end, or read more. */
		if (src->eof) {
			if (!dst->shut) {
				/* Half-close: the other side may still talk, so only our write end shuts. */
				shutdown(dst->fd, SHUT_WR);
				dst->shut = true;
				progress = true;
			}
			return progress;
		}
		if (!src->readable) {
			if (p) { /* run dry: an idle connection keeps no pipe */
				npd_pipe_put(c->w, p, true);
				src->pipe = NULL;
			}
			return progress;
		}
		if (p) {
			n = splice(src->fd, NULL, p->wr, NULL, NPD_PIPE_SIZE,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				p->len += (uint32_t)n;
				src->bytes += (uint64_t)n;
				progress = true;
			} else if (n == 0) {
				src->eof = true;
				progress = true;
			} else if (!failed(c, src, &src->readable, e)) {
				/* The pipe is empty, so EAGAIN speaks of the socket. */
				if (e->err)
					return progress;
			}
			continue;
		}
		if (!b && !(b = src->in = npd_buf_get(c->w))) {
			e->side = "relay";
			e->err = ENOMEM;
			return progress;
		}
		n = recv(src->fd, b->data, b->cap, 0);
		if (n > 0) {
			b->off = 0;
			b->len = (uint32_t)n;
			src->bytes += (uint64_t)n;
			progress = true;
			if ((size_t)n < b->cap && !src->fin_seen)
				src->readable = false; /* drained: new data brings a new edge */
			else if (!src->pipe)
				src->pipe = npd_pipe_get(c->w); /* a full buffer: bulk, splice the rest */
			continue;
		}
		npd_buf_put(c->w, b);
		src->in = NULL;
		if (n == 0) {
			src->eof = true;
			progress = true;
		} else if (!failed(c, src, &src->readable, e) && e->err) {
			return progress;
		}
	}
}

void npd_relay(struct npd_conn *c)
{
	struct relay_error e = {0};
	bool moved = false, progress;

	do {
		progress = pump(c, &c->client, &c->backend, &e);
		progress |= pump(c, &c->backend, &c->client, &e);
		moved |= progress;
	} while (progress && !e.err);

	if (e.err) {
		npd_conn_close(c, "%s: %s", e.side, strerror(e.err));
		return;
	}
	if (c->client.eof && c->backend.eof && c->client.shut && c->backend.shut) {
		npd_conn_close(c, "done");
		return;
	}
	if (moved && c->service->idle_timeout_ms > 0) {
		struct npd_timer_list *tl = npd_worker_timers(c->w, c->service->idle_timeout_ms);
		if (tl)
			npd_timer_arm(tl, &c->timer, c->w->now_ms);
	}
}
