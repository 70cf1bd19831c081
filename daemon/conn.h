/*
 * conn.h - one relayed connection, from accept to close.
 *
 *   HEADER ──▶ CONNECTING ──▶ RELAY ──▶ closed
 *
 * One struct owns everything the connection has: both sockets, the buffers
 * in flight, its timer and its addresses; npd_conn_close() is the only way
 * out, frees whatever exists and writes the one log line.
 */
#ifndef NPD_CONN_H
#define NPD_CONN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "addresses.h"
#include "buffers.h"
#include "list.h"
#include "timer.h"
#include "worker.h"

enum npd_conn_state {
	NPD_CONN_HEADER,
	NPD_CONN_CONNECTING,
	NPD_CONN_RELAY,
	NPD_CONN_LINGER, /* relay over, our FIN sent; the client's last bytes are drained */
	NPD_CONN_CLOSED,
};

/* One of the connection's two sockets, and what was read from it. */
struct npd_side {
	struct npd_ev ev; /* NPD_EV_CLIENT or NPD_EV_BACKEND */
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
	bool eof;		 /* it sent its FIN and we have read it: nothing more to read */
	bool shut;		 /* we sent it our FIN (shutdown SHUT_WR) */
	int error;		 /* errno of the read or write that failed on it; 0 while fine */
	struct npd_buf *in;	 /* read from this side, not yet written to the other */
	bool bulk;		 /* its last read filled its buffer: read into a bulk one */
	uint32_t budget;	 /* bytes that may still be read from it in the turn (relay.c) */
	uint64_t bytes;		 /* application bytes read from this side */
};

struct npd_conn {
	struct npd_side client, backend;
	struct npd_worker *w;
	struct npd_gen *gen;
	const struct npd_listener *listener;
	const struct npd_service *service; /* NULL for an unmapped port */
	const struct npd_target *target;   /* the service's address it goes to; NULL before */
	struct npd_timer timer;		   /* header, connect or idle deadline */
	struct npd_list link;		   /* in the worker's conns, then its graveyard */
	struct npd_list ready;		   /* in the worker's ready list (worker.h) */
	struct npd_list waiting;	   /* in the worker's waiting list while in NPD_CONN_HEADER */
	uint64_t turn;			   /* the loop turn the sides' budgets are for */
	struct npd_conn *next_free;
	uint64_t id;
	int64_t start_ms;
	uint8_t state;
	uint8_t version; /* of the PROXY header received; 0 before */
	uint8_t command;
	uint8_t transport; /* enum np_transport of the header */
	union npd_sockaddr peer_addr;	/* the proxy that connected to us */
	union npd_sockaddr client_addr; /* the client the header names; AF_UNSPEC for LOCAL */
	union npd_sockaddr dst_addr;	/* the original destination; likewise */
	union npd_sockaddr local_addr;	/* the backend socket's own address, once connected */
};

/* A trusted peer's accepted socket fd on listening socket ls: start its connection. */
void npd_conn_open(struct npd_worker *w, const struct npd_lsock *ls, int fd,
		   const union npd_sockaddr *peer);

/* epoll reported events on one side of c. */
void npd_conn_event(struct npd_conn *c, struct npd_side *side, uint32_t events);

/* c's timer expired. */
void npd_conn_expire(struct npd_conn *c);

__attribute__((format(printf, 2, 3))) void npd_conn_close(struct npd_conn *c, const char *fmt, ...);

/*
 * Move bytes both ways as far as readiness and the turn's budget allow
 * (relay.c). Closes c when done or on error; queues it on the worker's ready
 * list when the budget ran out first.
 */
void npd_relay(struct npd_conn *c);

/* c was taken from the ready list: go on with whatever it was doing (relay.c). */
void npd_relay_again(struct npd_conn *c);

/* Give back the buffer holding what was read from s, with whatever is still in it. */
void npd_side_discard(struct npd_conn *c, struct npd_side *s);

/* In NPD_CONN_LINGER: read and drop what the client still sends; close at its end (relay.c). */
void npd_linger(struct npd_conn *c, bool expired);

/* How long a lingering close waits for the client's end. */
#define NPD_LINGER_MS 2000

#endif /* NPD_CONN_H */
