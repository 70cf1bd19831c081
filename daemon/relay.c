/*
 * relay.c - move bytes both ways between client and backend.
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
 * A connection reads at most NPD_TURN_BYTES from each side when it has the
 * loop (worker.h): a peer that keeps its socket full must not keep the loop
 * from every other connection. When a side's budget runs out before it has
 * run dry, its readiness is not used up, and no new edge will say so: the
 * connection goes to the tail of the worker's ready list, and until its
 * place comes, events for it only note the readiness they bring. A
 * connection moving bulk data goes there at its events too, while one
 * exchanging messages is served at once. Each side has a budget of its own,
 * so that a direction served first cannot starve the other.
 *
 * A direction ends when its source has sent FIN and everything before it has
 * been written and followed by our FIN. A side that fails (reset, broken
 * pipe) ends the direction into it at once, since nothing can reach it any
 * more, and the direction out of it once what was read from it before the
 * failure has been delivered: an error on one side never costs the other
 * side a byte it was owed. The connection closes when both directions ended.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "conn.h"

_Static_assert(NPD_TURN_BYTES >= NPD_BULK_SIZE, "a bulk read must fit in a turn's budget");

static const char *side_name(const struct npd_conn *c, const struct npd_side *s)
{
	return s == &c->client ? "client" : "backend";
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

void npd_side_discard(struct npd_conn *c, struct npd_side *src)
{
	if (src->in) {
		npd_buf_put(&c->w->bufs, src->in);
		src->in = NULL;
	}
}

/* What may still be read from side s of c in this turn of the loop. */
static uint32_t budget(struct npd_conn *c, const struct npd_side *s)
{
	if (c->turn != c->w->turn) {
		c->turn = c->w->turn;
		c->client.budget = c->backend.budget = NPD_TURN_BYTES;
	}
	return s->budget;
}

/* c has more to read but no budget left: it goes on at the next turn. */
static void again_next_turn(struct npd_conn *c)
{
	if (!npd_list_linked(&c->ready))
		npd_list_add_tail(&c->w->ready, &c->ready);
}

/*
 * Move what src has to say to dst. Returns true when anything happened; sets
 * *starved when src is still readable but the turn's budget is spent.
 */
static bool pump(struct npd_conn *c, struct npd_side *src, struct npd_side *dst, bool *starved)
{
	bool progress = false;

	if (dst->error) {
		npd_side_discard(c, src);
		return false;
	}
	for (;;) {
		struct npd_buf *b = src->in;
		ssize_t n;

		/* What was read goes out first. */
		if (b && b->off < b->len) {
			if (!dst->writable)
				return progress;
			/*
			 * When src has ended, our FIN follows these bytes at once:
			 * MSG_MORE lets the kernel put it in their last segment, one
			 * packet and one wake-up of the peer instead of two. (The FIN,
			 * or the close that sends it, pushes them out.)
			 */
			n = send(dst->fd, b->data + b->off, b->len - b->off,
				 MSG_NOSIGNAL | (src->eof ? MSG_MORE : 0));
			if (n < 0) {
				if (retry(dst, &dst->writable))
					continue;
				if (dst->error)
					npd_side_discard(c, src);
				return progress;
			}
			b->off += (uint32_t)n;
			progress = true;
			if (b->off == b->len) {
				npd_buf_put(&c->w->bufs, b);
				src->in = NULL;
			}
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
		uint32_t want = budget(c, src);
		if (want == 0) {
			*starved = true;
			return progress;
		}
		if (!b && !(b = src->in = npd_buf_get(&c->w->bufs, src->bulk))) {
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
		npd_buf_put(&c->w->bufs, b);
		src->in = NULL;
		if (n == 0) {
			src->eof = true;
			progress = true;
		} else if (!read_failed(src) && !src->eof) {
			return progress;
		}
	}
}

/* Close with the reason the relay ended: the first side that failed, or "done". */
static void finish(struct npd_conn *c)
{
	const struct npd_side *failed = c->client.error	   ? &c->client
					: c->backend.error ? &c->backend
							   : NULL;
	if (failed)
		npd_conn_close(c, "%s: %s", side_name(c, failed), strerror(failed->error));
	else
		npd_conn_close(c, "done");
}

void npd_linger(struct npd_conn *c, bool expired)
{
	char sink[4096];

	if (expired) {
		finish(c);
		return;
	}
	if (npd_list_linked(&c->ready))
		return; /* queued: its place will come */
	while (c->client.readable) {
		uint32_t want = budget(c, &c->client);
		if (want == 0) {
			again_next_turn(c);
			return;
		}
		ssize_t n = recv(c->client.fd, sink, want < sizeof(sink) ? want : sizeof(sink), 0);
		if (n > 0) {
			c->client.budget -= (uint32_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->client.readable = false;
			return; /* the next edge, or the timer, brings us back */
		}
		finish(c); /* the client's end, or its error: nothing is lost by closing now */
		return;
	}
}

/* The direction from src to dst has ended. */
static bool ended(const struct npd_side *src, const struct npd_side *dst)
{
	return dst->error || (src->eof && dst->shut);
}

static void relay(struct npd_conn *c)
{
	bool moved = false, starved = false, progress;

	do {
		progress = pump(c, &c->client, &c->backend, &starved);
		progress |= pump(c, &c->backend, &c->client, &starved);
		moved |= progress;
	} while (progress);

	if (ended(&c->client, &c->backend) && ended(&c->backend, &c->client)) {
		/*
		 * Closing a socket with unread input sends a reset, and a reset makes
		 * the peer's kernel drop what it has not read yet: the end of what we
		 * just sent the client. When the client may still be sending (the
		 * backend failed first), drain it after our FIN, for a while, and
		 * close only then: the lingering close web servers do.
		 */
		if (!c->client.eof && !c->client.error && c->client.shut) {
			struct npd_timer_list *tl = npd_worker_timers(c->w, NPD_LINGER_MS);
			if (tl) {
				c->state = NPD_CONN_LINGER;
				npd_timer_arm(tl, &c->timer, c->w->now_ms);
				npd_linger(c, false);
				return;
			}
		}
		finish(c);
		return;
	}
	if (starved)
		again_next_turn(c);
	if (moved && c->service->idle_timeout_ms > 0) {
		struct npd_timer_list *tl = npd_worker_timers(c->w, c->service->idle_timeout_ms);
		if (tl)
			npd_timer_arm(tl, &c->timer, c->w->now_ms);
	}
}

void npd_relay(struct npd_conn *c)
{
	if (npd_list_linked(&c->ready))
		return; /* queued: its place will come; the readiness is noted */
	/*
	 * A connection moving bulk data waits for its place even when it was
	 * not queued: what arrives meanwhile makes its reads large (small ones
	 * cost the peers' wake-ups: 10% more CPU per GiB with four streams),
	 * and it keeps the loop from no one. Messages go through at once.
	 */
	if (c->client.bulk || c->backend.bulk) {
		again_next_turn(c);
		return;
	}
	relay(c);
}

/* Taken off the ready list: the conn's place has come. */
void npd_relay_again(struct npd_conn *c)
{
	if (c->state == NPD_CONN_RELAY)
		relay(c);
	else if (c->state == NPD_CONN_LINGER)
		npd_linger(c, false);
}
