/*
 * conn.h - one relayed connection, from accept to close, and the set of a
 * worker's connections.
 *
 *   HEADER ──▶ CONNECTING ──▶ RELAY ──▶ [LINGER] ──▶ closed
 *
 * One struct owns everything the connection has: both sockets and the bytes
 * in flight (its relay), its timer, its place on the loop's ready list and
 * its addresses. conn.c owns the whole life: it reads the header, connects,
 * runs the relay and acts on its verdict (re-arms the idle timer, queues the
 * connection for its next turn, lingers, closes); npd_conn_close() is the
 * only way out, frees whatever exists and writes the one log line.
 */
#ifndef NPD_CONN_H
#define NPD_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "addresses.h"
#include "buffers.h"
#include "config.h"
#include "gen.h"
#include "list.h"
#include "loop.h"
#include "relay.h"

enum npd_conn_state {
	NPD_CONN_HEADER,
	NPD_CONN_CONNECTING,
	NPD_CONN_RELAY,
	NPD_CONN_LINGER, /* relay over, our FIN sent; the client's last bytes are drained */
	NPD_CONN_CLOSED,
};

struct npd_conns;
struct npd_stats;

struct npd_conn {
	struct npd_relay relay; /* both sockets, and what was read from each */
	struct npd_watch client_watch, backend_watch;
	struct npd_conns *owner;
	struct npd_gen *gen;
	const struct npd_listener *listener;
	const struct npd_service *service; /* NULL for an unmapped port */
	const struct npd_target *target;   /* the service's address it goes to; NULL before */
	struct npd_timer timer;		   /* header, connect, idle or linger deadline */
	struct npd_task again;		   /* on the loop's ready list: more to do next turn */
	struct npd_list link;		   /* in the owner's open list, then its graveyard */
	struct npd_list waiting;	   /* in the owner's waiting list while in NPD_CONN_HEADER */
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
	struct npd_stats_service *stats; /* its service's counters in the worker (stats.h) */
	int64_t header_ms;		 /* when its header was complete, for the connect time */
	uint8_t result;			 /* enum npd_result, when an event decided it */
	uint64_t counted_up, counted_down; /* of the relay's bytes, those counted so far */
};

/*
 * A worker's connections: the slots, open and closed, and what they share,
 * the loop they run in and the pool their buffers come from.
 */
struct npd_conns {
	struct npd_loop *loop;
	struct npd_buf_pool *pool;
	struct npd_stats *stats; /* the worker's counters (stats.h), which its connections add to */
	size_t n;	      /* open */
	struct npd_list open; /* every open connection, to close them at exit */
	/*
	 * Connections still waiting for their header, oldest first: at
	 * max_connections the first makes room for a new one, so that silent
	 * connections cannot keep out the clients that send their headers.
	 */
	struct npd_list waiting;
	struct npd_list graveyard; /* closed this turn; freed once no event can name them */
	struct npd_conn *free;	   /* slots to reuse */
	bool draining;		   /* a graceful stop: header deadlines close "shutting down" */
	size_t cut;		   /* closed "shutting down" */
	size_t cut_unheaded;	   /* of them, still waiting for their header */
};

/* An empty set whose connections run in loop, with buffers from pool, counted in stats. */
void npd_conns_init(struct npd_conns *cs, struct npd_loop *loop, struct npd_buf_pool *pool,
		    struct npd_stats *stats);

/*
 * A trusted peer's accepted socket fd on gen's listener number listener:
 * start its connection (it takes fd and a reference to gen). False only
 * when out of memory: fd is closed and nothing was logged.
 */
bool npd_conn_open(struct npd_conns *cs, struct npd_gen *gen, int listener, int fd,
		   const union npd_sockaddr *peer);

__attribute__((format(printf, 2, 3))) void npd_conn_close(struct npd_conn *c, const char *fmt, ...);

/*
 * At the connection limit (limit, for the line): close the connection that
 * has waited longest for its header, to make room. False when none waits.
 */
bool npd_conns_shed(struct npd_conns *cs, size_t limit);

/*
 * A graceful stop begins: a connection still waiting for its header has at
 * most NPD_DRAIN_HEADER_MS more (none with grace_ms 0), then closes
 * "shutting down". Relayed connections go on.
 */
#define NPD_DRAIN_HEADER_MS 1000
void npd_conns_drain(struct npd_conns *cs, int grace_ms);

/* Close every open connection "shutting down". */
void npd_conns_close_all(struct npd_conns *cs);

/* Free the slots closed this turn for reuse; true when there were some (descriptors freed). */
bool npd_conns_bury(struct npd_conns *cs);

/* Free every slot kept for reuse (after npd_conns_close_all and npd_conns_bury). */
void npd_conns_free(struct npd_conns *cs);

/* How long a lingering close waits for the client's end. */
#define NPD_LINGER_MS 2000

#endif /* NPD_CONN_H */
