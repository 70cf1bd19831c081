/*
 * relay.h - move bytes both ways between two sockets, and say what
 * happened; what to do about it is the caller's (conn.c).
 *
 * The relay works on a struct npd_relay alone: the two sides, the pool its
 * buffers come from and the turn its budgets are for. It never closes a
 * socket, arms a timer or queues anything: it returns a verdict.
 */
#ifndef NPD_RELAY_H
#define NPD_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffers.h"

/*
 * A relay reads at most NPD_TURN_BYTES from each of its sides per turn of
 * the loop (worker.h says why that much): a peer that keeps its socket full
 * must not keep the loop from every other connection.
 */
#define NPD_TURN_BYTES (4 * 1024 * 1024)

/* One of the two sockets, and what was read from it. */
struct npd_side {
	int fd;
	bool readable, writable; /* edge-triggered readiness not used up yet */
	bool fin_seen;		 /* epoll said its FIN has arrived: read until recv() says 0 */
	bool err_seen;		 /* epoll said it failed: read until recv() says why */
	/*
	 * A short read took all there was: true for TCP, until urgent data
	 * (EPOLLPRI) comes, at whose mark recv() stops early; never for a
	 * UNIX socket, whose recv() may stop between two writers' messages.
	 * Where false, a side is read until EAGAIN.
	 */
	bool short_read_drains;
	bool eof;	     /* it sent its FIN and we have read it: nothing more to read */
	bool shut;	     /* we sent it our FIN (shutdown SHUT_WR) */
	int error;	     /* errno of the read or write that failed on it; 0 while fine */
	struct npd_buf *in;  /* read from this side, not yet written to the other */
	bool bulk;	     /* its last read filled its buffer: read into a bulk one */
	uint32_t budget;     /* bytes that may still be read from it in the turn */
	uint64_t bytes;	     /* application bytes read from this side */
};

struct npd_relay {
	struct npd_side client, backend;
	struct npd_buf_pool *pool;
	uint64_t turn; /* the loop turn the sides' budgets are for */
};

enum npd_relay_verdict {
	NPD_RELAY_IDLE,	   /* nothing moved: wait for an edge */
	NPD_RELAY_MOVED,   /* bytes or an end moved; the rest waits for an edge */
	/*
	 * A side is still readable but has spent this turn's budget: no edge
	 * will come for what it holds, so call again at a later turn. Bytes
	 * moved in this turn, if not in this call.
	 */
	NPD_RELAY_STARVED,
	/*
	 * Both directions ended, the backend's first: our FIN went to the
	 * client, which may still be sending. Closing now would reset it and
	 * lose it the end of what we sent: drain it (npd_relay_drain) first.
	 */
	NPD_RELAY_LINGER,
	NPD_RELAY_DONE,	  /* both directions ended: close */
	NPD_RELAY_FAILED, /* both ended, a side failed: close; npd_relay_failed() says which */
};

/* An idle relay between two descriptors, its buffers from pool; fd -1 for one not there yet. */
void npd_relay_init(struct npd_relay *r, struct npd_buf_pool *pool, int client_fd,
		    int backend_fd);

/*
 * Note the readiness epoll reports on side s (EPOLL* flags): what the next
 * npd_relay_move() may read or write.
 */
void npd_side_note(struct npd_side *s, uint32_t events);

/*
 * Move bytes both ways as far as readiness and turn's budget allow (a new
 * turn number gives each side a new budget). Never blocks, never closes.
 */
enum npd_relay_verdict npd_relay_move(struct npd_relay *r, uint64_t turn);

/*
 * After NPD_RELAY_LINGER: read and drop what the client still sends, within
 * the turn's budget. IDLE: wait for its next edge; STARVED: call again at a
 * later turn; DONE or FAILED (as the relay ended): the client has ended or
 * failed, close.
 */
enum npd_relay_verdict npd_relay_drain(struct npd_relay *r, uint64_t turn);

/*
 * Write what was read from src (src->in) to dst until it is all out or dst
 * takes no more; the relay's send path, also for the first bytes to a
 * backend still connecting, whose send says whether it is there. Returns
 * the bytes sent. When src->in is left unsent, dst would block (its writable
 * is cleared); when dst->error is set, dst failed, and what src had for it
 * was given back.
 */
size_t npd_relay_flush(struct npd_relay *r, struct npd_side *src, struct npd_side *dst);

/* A side reads bulk data: its relay should wait for its place behind the others. */
static inline bool npd_relay_bulk(const struct npd_relay *r)
{
	return r->client.bulk || r->backend.bulk;
}

/* The first side that failed (the client's is looked at first), or NULL. */
const struct npd_side *npd_relay_failed(const struct npd_relay *r);

/* Give back the buffer holding what was read from s, with whatever is still in it. */
void npd_side_discard(struct npd_relay *r, struct npd_side *s);

#endif /* NPD_RELAY_H */
