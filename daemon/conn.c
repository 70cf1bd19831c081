/*
 * conn.c - a connection's life: read and check the PROXY header, connect to
 * the service's backend, run the relay and act on its verdicts (the idle
 * timer, the ready list, the lingering close), and close with one line; and
 * the slots of a worker's connections, reused after the turn they closed in.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "backend.h"
#include "conn.h"
#include "log.h"
#include "netproxy.h"
#include "relay.h"
#include "stats.h"

#define SIDE_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET)

/* Connection numbers in the log, 1, 2, ... across all workers. */
static atomic_ullong next_conn_id = 1;

void npd_conns_init(struct npd_conns *cs, struct npd_loop *loop, struct npd_buf_pool *pool,
		    struct npd_stats *stats)
{
	memset(cs, 0, sizeof(*cs));
	cs->loop = loop;
	cs->pool = pool;
	cs->stats = stats;
	npd_list_init(&cs->open);
	npd_list_init(&cs->waiting);
	npd_list_init(&cs->graveyard);
}

static struct npd_conn *conn_alloc(struct npd_conns *cs)
{
	struct npd_conn *c = cs->free;

	if (c)
		cs->free = c->next_free;
	else if (!(c = malloc(sizeof(*c))))
		return NULL;
	memset(c, 0, sizeof(*c));
	return c;
}

/* Arm c's timer for duration_ms from now; false only when out of memory. */
static bool arm(struct npd_conn *c, int duration_ms)
{
	struct npd_loop *l = c->owner->loop;
	struct npd_timer_list *tl = npd_loop_timers(l, duration_ms);

	if (!tl)
		return false;
	npd_timer_arm(tl, &c->timer, l->now_ms);
	return true;
}

static void on_client_events(void *obj, uint32_t events);
static void on_backend_events(void *obj, uint32_t events);
static void on_timer(void *obj);
static void on_turn(void *obj);
static void read_header(struct npd_conn *c);

bool npd_conn_open(struct npd_conns *cs, struct npd_gen *gen, int listener, int fd,
		   const union npd_sockaddr *peer)
{
	const struct npd_config *cfg = gen->cfg;
	struct npd_conn *c = conn_alloc(cs);

	if (!c) {
		close(fd);
		return false;
	}
	c->owner = cs;
	c->gen = gen;
	npd_gen_hold(c->gen);
	c->listener = &cfg->listeners[listener];
	c->service = c->listener->service >= 0 ? &cfg->services[c->listener->service] : NULL;
	c->id = atomic_fetch_add_explicit(&next_conn_id, 1, memory_order_relaxed);
	c->start_ms = cs->loop->now_ms;
	c->state = NPD_CONN_HEADER;
	c->peer_addr = *peer;
	npd_relay_init(&c->relay, cs->pool, fd, -1);
	c->client_watch = (struct npd_watch){.fn = on_client_events, .obj = c};
	c->backend_watch = (struct npd_watch){.fn = on_backend_events, .obj = c};
	npd_timer_init(&c->timer, on_timer, c);
	npd_task_init(&c->again, on_turn, c);
	npd_list_add_tail(&cs->open, &c->link);
	npd_list_add_tail(&cs->waiting, &c->waiting);
	cs->n++;
	npd_stats_conn_open(c);

	if (npd_watch_add(cs->loop, fd, SIDE_EVENTS, &c->client_watch) != 0) {
		npd_conn_close(c, "epoll: %s", strerror(errno));
		return true;
	}
	if (!arm(c, cfg->header_timeout_ms)) {
		npd_conn_close(c, "out of memory");
		return true;
	}
	if (npd_log_enabled(NPD_LOG_DEBUG)) {
		char peer_text[NPD_SOCKADDR_TEXT];
		npd_log(NPD_LOG_DEBUG, "conn=%llu accepted on %s from %s", (unsigned long long)c->id,
			c->listener->addr_text, npd_sockaddr_text(peer, peer_text, sizeof(peer_text)));
	}
	/* Proxies send the header at once: it is usually there by now. */
	c->relay.client.readable = true;
	read_header(c);
	return true;
}

/* Keep the addresses the header names, for the log. */
static void note_header(struct npd_conn *c, const struct np_header *h)
{
	struct sockaddr_storage ss;

	c->version = h->version;
	c->command = h->command;
	c->transport = h->transport;
	if (!np_has_addresses(h))
		return;
	if (h->family == NP_AF_UNIX) {
		c->client_addr.sa.sa_family = c->dst_addr.sa.sa_family = AF_UNIX;
		return;
	}
	if (np_endpoint_to_sockaddr(h, &h->src, &ss) > 0)
		memcpy(&c->client_addr, &ss, sizeof(c->client_addr));
	if (np_endpoint_to_sockaddr(h, &h->dst, &ss) > 0)
		memcpy(&c->dst_addr, &ss, sizeof(c->dst_addr));
}

/*
 * The header the service gets. Only a PROXY header over TCP, IPv4 or IPv6,
 * keeps its addresses: that is what every receiver (HAProxy among them)
 * accepts. Anything else, LOCAL and v1 UNKNOWN included, goes out as LOCAL,
 * which tells the service to use the connection's own addresses.
 * Returns the length written to out, or a negative NP_E* code.
 */
static int reemit(const struct npd_service *svc, const struct np_header *h, uint8_t *out,
		  size_t cap)
{
	struct np_header o;
	struct np_tlv tlvs[256];
	size_t n = 0;

	memset(&o, 0, sizeof(o));
	o.command = NP_CMD_LOCAL;
	if (h->command == NP_CMD_PROXY && h->transport == NP_TRANSPORT_STREAM &&
	    (h->family == NP_AF_INET || h->family == NP_AF_INET6)) {
		o.command = NP_CMD_PROXY;
		o.family = h->family;
		o.transport = NP_TRANSPORT_STREAM;
		o.src = h->src;
		o.dst = h->dst;
	}
	if (svc->send_proxy == NPD_SEND_V1)
		return np_build_v1(out, cap, &o);

	struct np_tlv_iter it;
	struct np_tlv t;
	np_tlv_iter_init(&it, h->tlv, h->tlv_len);
	while (np_tlv_next(&it, &t) > 0) {
		/* The parser checked the area; a CRC32C is never passed: it would be stale. */
		if (t.type == NP_TLV_CRC32C || !(svc->pass_tlvs[t.type / 8] & (1u << (t.type % 8))))
			continue;
		if (n == sizeof(tlvs) / sizeof(tlvs[0]))
			return NP_ENOSPC; /* more than we pass on; better refused than cut short */
		tlvs[n++] = t;
	}
	return np_build_v2(out, cap, &o, tlvs, n, svc->crc32c ? NP_BUILD_CRC32C : 0);
}

static void connect_backend(struct npd_conn *c);
static void connecting(struct npd_conn *c);

/* The header is the first hlen bytes of the client buffer. */
static void header_done(struct npd_conn *c, const struct np_header *h, int hlen)
{
	struct npd_buf *b = c->relay.client.in;
	const struct npd_service *svc = c->service;

	note_header(c, h);
	npd_stats_header_done(c, h);
	if (npd_log_enabled(NPD_LOG_DEBUG)) {
		char client[NPD_SOCKADDR_TEXT];
		npd_log(NPD_LOG_DEBUG, "conn=%llu header v%u %s, %d bytes, client=%s, %zu bytes of TLVs",
			(unsigned long long)c->id, h->version,
			h->command == NP_CMD_PROXY ? "PROXY" : "LOCAL", hlen,
			npd_sockaddr_text(&c->client_addr, client, sizeof(client)), h->tlv_len);
	}
	if (!svc) {
		if (c->listener->missing[0])
			npd_conn_close(c, "port %u is mapped to %s, which is not a service",
				       (unsigned)c->listener->port, c->listener->missing);
		else
			npd_conn_close(c, "port %u has no mapping in proxy_port_mappings",
				       (unsigned)c->listener->port);
		return;
	}

	/* Replace the header in place with the one the service gets, in front of the data. */
	uint8_t small[512], *out = small;
	size_t cap = sizeof(small), rest = b->len - (size_t)hlen;
	int olen = 0;
	if (svc->send_proxy != NPD_SEND_NONE) {
		if ((size_t)hlen + 128 > cap) {
			cap = (size_t)hlen + 128; /* room for every TLV passed and a CRC32C */
			if (!(out = malloc(cap))) {
				npd_conn_close(c, "out of memory");
				return;
			}
		}
		olen = reemit(svc, h, out, cap);
	}
	if (olen < 0 || (size_t)olen + rest > b->cap) {
		if (out != small)
			free(out);
		npd_conn_close(c, "cannot build the header for %s: %s", svc->name,
			       olen < 0 ? np_strerror(olen) : "too long");
		return;
	}
	memmove(b->data + olen, b->data + hlen, rest);
	memcpy(b->data, out, (size_t)olen);
	if (out != small)
		free(out);
	b->off = 0;
	b->len = (uint32_t)((size_t)olen + rest);
	c->relay.client.bytes = rest;
	npd_stats_relayed(c);
	connect_backend(c);
}

/*
 * A header over proxy_max_header. The cap is a memory bound, so the line
 * says which setting to raise, and for a v2 header, whose 16 fixed bytes
 * announce its length, by how much.
 */
static void too_big(struct npd_conn *c)
{
	static const uint8_t v2_sig[12] = "\r\n\r\n\0\r\nQUIT\n"; /* 12 bytes, no NUL */
	const struct npd_buf *b = c->relay.client.in;
	size_t max = c->gen->cfg->max_header;

	npd_stats_header_failed(c, NP_ETOOBIG);
	if (b->len >= NP_V2_MIN_LEN && memcmp(b->data, v2_sig, sizeof(v2_sig)) == 0)
		npd_conn_close(c,
			       "header of %d bytes is larger than proxy_max_header (%zu); raise "
			       "proxy_max_header (at most %d) to accept it",
			       NP_V2_MIN_LEN + (b->data[14] << 8 | b->data[15]), max, NP_V2_MAX_LEN);
	else
		npd_conn_close(c,
			       "header larger than proxy_max_header (%zu); raise proxy_max_header "
			       "(at most %d) to accept it",
			       max, NP_V2_MAX_LEN);
}

static void header_failed(struct npd_conn *c, int err)
{
	const struct npd_buf *b = c->relay.client.in;
	char first[64];

	if (err == NP_ETOOBIG) {
		too_big(c);
		return;
	}
	npd_stats_header_failed(c, err);
	npd_escape(first, sizeof(first), b->data, b->len < 24 ? b->len : 24);
	npd_conn_close(c, "malformed header: %s (%s), first bytes [%s]", np_strerror(err),
		       np_errname(err), first);
}

/*
 * A header longer than a pool buffer: move it to a buffer of proxy_max_header
 * bytes, and the headroom. Up to 65551 + 64 bytes for each connection in its
 * header phase, freed when it has been relayed. NULL when out of memory.
 */
static struct npd_buf *grow(struct npd_conn *c)
{
	struct npd_buf *b = c->relay.client.in, *big;
	size_t cap = c->gen->cfg->max_header + NPD_BUF_HEADROOM;

	if (!(big = npd_buf_oversize(b, cap)))
		return NULL;
	npd_buf_put(c->owner->pool, b);
	return c->relay.client.in = big;
}

static void read_header(struct npd_conn *c)
{
	const struct npd_config *cfg = c->gen->cfg;

	while (c->relay.client.readable) {
		struct npd_buf *b = c->relay.client.in;
		if (!b && !(b = c->relay.client.in = npd_buf_get(c->owner->pool, false))) {
			npd_conn_close(c, "out of memory");
			return;
		}
		size_t room = b->cap - NPD_BUF_HEADROOM - b->len;
		/* Full: the parser would have said if proxy_max_header were passed. */
		if (room == 0 && b->cap >= cfg->max_header + NPD_BUF_HEADROOM) {
			too_big(c);
			return;
		}
		if (room == 0 && !(b = grow(c))) {
			npd_conn_close(c, "out of memory");
			return;
		}
		room = b->cap - NPD_BUF_HEADROOM - b->len;

		ssize_t n = recv(c->relay.client.fd, b->data + b->len, room, 0);
		if (n > 0) {
			struct np_header h;

			b->len += (uint32_t)n;
			if ((size_t)n < room && !c->relay.client.fin_seen && c->relay.client.short_read_drains)
				c->relay.client.readable = false; /* drained: the next edge says when to read */
			int r = np_parse_max(b->data, b->len, cfg->max_header, &h);
			if (r > 0) {
				header_done(c, &h, r);
				return;
			}
			if (r != NP_EAGAIN) {
				header_failed(c, r);
				return;
			}
		} else if (n == 0) {
			npd_conn_close(c, "client closed before the header was complete (%u bytes)",
				       b->len);
			return;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			c->relay.client.readable = false;
		} else if (errno != EINTR) {
			npd_conn_close(c, "client: %s", strerror(errno));
			return;
		}
	}
	/* Idle connections hold no buffer. */
	if (c->relay.client.in && c->relay.client.in->len == 0) {
		npd_buf_put(c->owner->pool, c->relay.client.in);
		c->relay.client.in = NULL;
	}
}

static void connect_backend(struct npd_conn *c)
{
	const struct npd_service *svc = c->service;
	char why[256];
	bool port_moved;
	/*
	 * Only a stream's client is one this TCP connection can come from: a
	 * header about datagrams is treated like LOCAL, as reemit() does.
	 */
	static const union npd_sockaddr none = {.sa.sa_family = AF_UNSPEC};
	const union npd_sockaddr *from =
		c->transport == NP_TRANSPORT_STREAM ? &c->client_addr : &none;
	const struct npd_target *to = c->target = npd_backend_target(svc, from);
	int fd = npd_backend_socket(svc, to, from, &port_moved, why, sizeof(why));

	if (fd < 0) {
		npd_conn_close(c, "backend %s (%s): %s", svc->name, to->text, why);
		return;
	}
	/* Common and harmless (a client on this host holds its own port): debug only. */
	if (port_moved && npd_log_enabled(NPD_LOG_DEBUG)) {
		char client[NPD_SOCKADDR_TEXT];
		npd_log(NPD_LOG_DEBUG, "conn=%llu client %s: its port is in use here, so %s is reached "
			"from another port", (unsigned long long)c->id,
			npd_sockaddr_text(&c->client_addr, client, sizeof(client)), svc->name);
	}
	c->relay.backend.fd = fd;
	c->relay.backend.short_read_drains = to->addr.ss_family != AF_UNIX;
	if (npd_watch_add(c->owner->loop, fd, SIDE_EVENTS, &c->backend_watch) != 0) {
		npd_conn_close(c, "epoll: %s", strerror(errno));
		return;
	}
	if (connect(fd, (const struct sockaddr *)&to->addr, to->addrlen) == 0) {
		c->relay.backend.writable = true;
	} else if (errno != EINPROGRESS) {
		npd_conn_close(c, "backend %s (%s) unreachable: %s", svc->name, to->text,
			       strerror(errno));
		return;
	}
	c->state = NPD_CONN_CONNECTING;
	npd_list_del(&c->waiting);
	if (!arm(c, svc->connect_timeout_ms)) {
		npd_conn_close(c, "out of memory");
		return;
	}
	connecting(c);
}

/* Close with the reason the relay ended: the first side that failed, or "done". */
static void finish(struct npd_conn *c)
{
	const struct npd_side *failed = npd_relay_failed(&c->relay);

	if (failed)
		npd_conn_close(c, "%s: %s", failed == &c->relay.client ? "client" : "backend",
			       strerror(failed->error));
	else
		npd_conn_close(c, "done");
}

/* In NPD_CONN_LINGER: drop what the client still sends; close at its end. */
static void linger(struct npd_conn *c)
{
	if (npd_task_queued(&c->again))
		return; /* queued: its place will come */
	switch (npd_relay_drain(&c->relay, c->owner->loop->turn)) {
	case NPD_RELAY_STARVED:
		npd_loop_defer(c->owner->loop, &c->again);
		break;
	case NPD_RELAY_DONE:
	case NPD_RELAY_FAILED:
		finish(c); /* nothing is lost by closing now */
		break;
	default:
		break; /* the client's next edge, or the timer, brings us back */
	}
}

/* Bytes moved: the idle deadline starts again. */
static void idle_again(struct npd_conn *c)
{
	if (c->service->idle_timeout_ms > 0)
		arm(c, c->service->idle_timeout_ms); /* out of memory: the old deadline stays */
}

/* Move bytes, and act on what the relay says. */
static void relay(struct npd_conn *c)
{
	struct npd_loop *l = c->owner->loop;
	enum npd_relay_verdict v = npd_relay_move(&c->relay, l->turn);

	if (v != NPD_RELAY_IDLE)
		npd_stats_relayed(c);
	switch (v) {
	case NPD_RELAY_IDLE:
		break;
	case NPD_RELAY_STARVED:
		/*
		 * A side's budget ran out before it ran dry: its readiness is not
		 * used up, and no new edge will say so. The connection goes to the
		 * tail of the ready list, and until its place comes, events for it
		 * only note the readiness they bring.
		 */
		npd_loop_defer(l, &c->again);
		idle_again(c); /* it moved bytes in this turn */
		break;
	case NPD_RELAY_MOVED:
		idle_again(c);
		break;
	case NPD_RELAY_LINGER:
		/* Our FIN is sent; the client's last bytes are drained for a while. */
		if (arm(c, NPD_LINGER_MS)) {
			c->state = NPD_CONN_LINGER;
			linger(c);
			break;
		}
		finish(c);
		break;
	case NPD_RELAY_DONE:
	case NPD_RELAY_FAILED:
		finish(c);
		break;
	}
}

/* Readiness came for a relayed connection: relay now, or at its place. */
static void relay_now(struct npd_conn *c)
{
	if (npd_task_queued(&c->again))
		return; /* queued: its place will come; the readiness is noted */
	/*
	 * A connection moving bulk data waits for its place even when it was
	 * not queued: what arrives meanwhile makes its reads large (small ones
	 * cost the peers' wake-ups: 10% more CPU per GiB with four streams),
	 * and it keeps the loop from no one. Messages go through at once.
	 */
	if (npd_relay_bulk(&c->relay)) {
		npd_loop_defer(c->owner->loop, &c->again);
		return;
	}
	relay(c);
}

static const char *proxy_version_text(const struct npd_conn *c)
{
	if (c->version == 0)
		return "-";
	if (c->command == NP_CMD_LOCAL)
		return c->version == 1 ? "v1-unknown" : "v2-local";
	return c->version == 1 ? "v1" : "v2";
}

/*
 * The line an operator joins a service's log with, when the service is
 * reached: client, service and local (the address the service sees) at once,
 * not hours later at the close of a long XMPP stream. It is the one line of
 * the connection at the info level, unless log_connections says otherwise;
 * a LOCAL connection (a load balancer's health check) keeps its close line
 * instead, which is quiet when nothing was relayed.
 */
static void log_established(const struct npd_conn *c)
{
	enum npd_log_connections mode = c->gen->cfg->log_connections;
	int level = mode != NPD_LOG_CONN_CLOSED && c->command != NP_CMD_LOCAL ? NPD_LOG_INFO
									      : NPD_LOG_DEBUG;
	char peer[NPD_SOCKADDR_TEXT], client[NPD_SOCKADDR_TEXT], dst[NPD_SOCKADDR_TEXT],
		local[NPD_SOCKADDR_TEXT];

	if (!npd_log_enabled(level))
		return;
	npd_log(level,
		"conn=%llu port=%u service=%s peer=%s client=%s dst=%s proxy=%s local=%s "
		"backend=%s established",
		(unsigned long long)c->id, (unsigned)c->listener->port, c->service->name,
		npd_sockaddr_text(&c->peer_addr, peer, sizeof(peer)),
		npd_sockaddr_text(&c->client_addr, client, sizeof(client)),
		npd_sockaddr_text(&c->dst_addr, dst, sizeof(dst)), proxy_version_text(c),
		npd_sockaddr_text(&c->local_addr, local, sizeof(local)), c->target->text);
}

/*
 * The first bytes for the backend, sent before the connect is known to be
 * done, through the relay's own send path: the send itself says whether the
 * connect is. Returns 1 when the connection is up (bytes went out), 0 when
 * it is not yet (EAGAIN), or -1 with *err the connect's own error.
 */
static int send_first(struct npd_conn *c, int *err)
{
	struct npd_side *backend = &c->relay.backend;

	backend->writable = true; /* until the send says otherwise */
	if (npd_relay_flush(&c->relay, &c->relay.client, backend) > 0)
		return 1; /* a failure after the first bytes is the relay's to report */
	if (!backend->error)
		return 0;
	*err = backend->error;
	return -1;
}

/*
 * Right after connect() and at each writable edge until the backend is
 * there. A backend on this host has usually finished its handshake when
 * connect() returns EINPROGRESS: with bytes to send (a header, or what the
 * client sent with its own), sending them at once finds out, without a
 * getsockopt(SO_ERROR) or a trip through epoll_wait. With nothing to send,
 * the writable edge and SO_ERROR tell.
 */
static void connecting(struct npd_conn *c)
{
	const struct npd_service *svc = c->service;
	struct npd_buf *b = c->relay.client.in;
	int err = 0, up;

	if (b && b->off < b->len) {
		up = send_first(c, &err);
		if (up == 0)
			return; /* not writable: its edge comes with the handshake's end */
	} else {
		socklen_t len = sizeof(err);

		if (!c->relay.backend.writable)
			return;
		if (getsockopt(c->relay.backend.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
			err = errno;
		up = err ? -1 : 1;
	}
	if (up < 0) {
		/* A UNIX socket's connect() is done at once: then it is the send that failed. */
		npd_conn_close(c, "backend %s (%s) %s: %s", svc->name, c->target->text,
			       c->target->addr.ss_family == AF_UNIX ? "failed" : "connect failed",
			       strerror(err));
		return;
	}
	c->state = NPD_CONN_RELAY;
	npd_stats_connected(c);
	/* The address the backend sees this connection come from: what joins its log to ours. */
	socklen_t llen = sizeof(c->local_addr);
	if (getsockname(c->relay.backend.fd, &c->local_addr.sa, &llen) != 0)
		c->local_addr.sa.sa_family = AF_UNSPEC;
	log_established(c);
	if (svc->idle_timeout_ms > 0) {
		if (!arm(c, svc->idle_timeout_ms)) {
			npd_conn_close(c, "out of memory");
			return;
		}
	} else {
		npd_timer_cancel(&c->timer);
	}
	relay_now(c);
}

static void on_events(struct npd_conn *c, struct npd_side *side, uint32_t events)
{
	if (c->state == NPD_CONN_CLOSED)
		return; /* closed earlier in this batch of events; freed after it */
	npd_side_note(side, events);

	switch (c->state) {
	case NPD_CONN_HEADER:
		if (side == &c->relay.client)
			read_header(c);
		break;
	case NPD_CONN_CONNECTING:
		if (side == &c->relay.backend && side->writable)
			connecting(c);
		/* Client bytes wait in the kernel until the backend is there. */
		break;
	case NPD_CONN_RELAY:
		relay_now(c);
		break;
	case NPD_CONN_LINGER:
		if (side == &c->relay.client)
			linger(c);
		break;
	}
}

static void on_client_events(void *obj, uint32_t events)
{
	struct npd_conn *c = obj;

	on_events(c, &c->relay.client, events);
}

static void on_backend_events(void *obj, uint32_t events)
{
	struct npd_conn *c = obj;

	on_events(c, &c->relay.backend, events);
}

/* Its place on the ready list has come: go on with whatever it was doing. */
static void on_turn(void *obj)
{
	struct npd_conn *c = obj;

	if (c->state == NPD_CONN_RELAY)
		relay(c);
	else if (c->state == NPD_CONN_LINGER)
		linger(c);
}

static void on_timer(void *obj)
{
	struct npd_conn *c = obj;

	npd_stats_expired(c);
	switch (c->state) {
	case NPD_CONN_HEADER:
		if (c->owner->draining) {
			npd_stats_close_for(c, NPD_RESULT_SHUTDOWN);
			c->owner->cut_unheaded++;
			c->owner->cut++;
			npd_conn_close(c, "shutting down");
			break;
		}
		npd_conn_close(c, "header timeout (%d ms), %u bytes received",
			       c->gen->cfg->header_timeout_ms,
			       c->relay.client.in ? c->relay.client.in->len : 0);
		break;
	case NPD_CONN_CONNECTING:
		npd_conn_close(c, "backend %s (%s) connect timeout (%d ms)", c->service->name,
			       c->target->text, c->service->connect_timeout_ms);
		break;
	case NPD_CONN_LINGER:
		finish(c);
		break;
	default:
		npd_conn_close(c, "idle timeout (%d ms)", c->service->idle_timeout_ms);
	}
}

static void release_side(struct npd_conn *c, struct npd_side *s)
{
	npd_side_discard(&c->relay, s);
	if (s->fd >= 0) {
		close(s->fd); /* also takes it out of the epoll set */
		s->fd = -1;
	}
}

void npd_conn_close(struct npd_conn *c, const char *fmt, ...)
{
	struct npd_conns *cs = c->owner;
	char reason[512], peer[NPD_SOCKADDR_TEXT], client[NPD_SOCKADDR_TEXT], dst[NPD_SOCKADDR_TEXT],
		local[NPD_SOCKADDR_TEXT];
	va_list ap;

	if (c->state == NPD_CONN_CLOSED)
		return;
	npd_stats_conn_closed(c);
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);

	int64_t ms = cs->loop->now_ms - c->start_ms;
	/*
	 * A connection that never reached its service is worth a warning. One
	 * that did, with a LOCAL header and not a byte either way, is a load
	 * balancer's health check: a line every few seconds per server, debug,
	 * unless the service failed it.
	 */
	bool reached = c->state == NPD_CONN_RELAY || c->state == NPD_CONN_LINGER;
	bool health_check = c->command == NP_CMD_LOCAL;
	int level = !reached ? NPD_LOG_WARN
		    : health_check && !c->relay.client.bytes && !c->relay.backend.bytes &&
				      !c->relay.backend.error
			    ? NPD_LOG_DEBUG
		    : !health_check && c->gen->cfg->log_connections == NPD_LOG_CONN_ESTABLISHED
			    ? NPD_LOG_DEBUG /* its line was the one when it was established */
			    : NPD_LOG_INFO;
	if (!npd_log_enabled(level))
		goto release;
	npd_log(level,
		"conn=%llu port=%u service=%s peer=%s client=%s dst=%s proxy=%s local=%s up=%llu "
		"down=%llu duration=%lld.%03llds reason=\"%s\"",
		(unsigned long long)c->id, (unsigned)c->listener->port,
		c->service ? c->service->name : "-", npd_sockaddr_text(&c->peer_addr, peer, sizeof(peer)),
		npd_sockaddr_text(&c->client_addr, client, sizeof(client)),
		npd_sockaddr_text(&c->dst_addr, dst, sizeof(dst)), proxy_version_text(c),
		npd_sockaddr_text(&c->local_addr, local, sizeof(local)),
		(unsigned long long)c->relay.client.bytes, (unsigned long long)c->relay.backend.bytes,
		(long long)(ms / 1000), (long long)(ms % 1000), reason);
release:
	release_side(c, &c->relay.client);
	release_side(c, &c->relay.backend);
	npd_timer_cancel(&c->timer);
	npd_task_cancel(&c->again);
	c->state = NPD_CONN_CLOSED;
	/* Later events of this epoll batch may still name c: it is freed after the batch. */
	if (npd_list_linked(&c->waiting))
		npd_list_del(&c->waiting);
	npd_list_del(&c->link);
	npd_list_add_tail(&cs->graveyard, &c->link);
	cs->n--;
	npd_gen_release(c->gen);
	c->gen = NULL;
}

bool npd_conns_shed(struct npd_conns *cs, size_t limit)
{
	if (npd_list_empty(&cs->waiting))
		return false;
	/* The oldest still silent makes room: it had its chance longest. */
	struct npd_conn *oldest = npd_container_of(cs->waiting.next, struct npd_conn, waiting);

	npd_stats_close_for(oldest, NPD_RESULT_SHED);
	npd_conn_close(oldest,
		       "shed: at the connection limit (%zu), the connection waiting longest for its "
		       "header makes room", limit);
	return true;
}

void npd_conns_drain(struct npd_conns *cs, int grace_ms)
{
	/*
	 * A connection still waiting for its header has no service yet, but its
	 * header may be on its way (the client's connect() and its first write
	 * are two steps): it has at most NPD_DRAIN_HEADER_MS more, its header
	 * timeout's remainder if shorter, and closes "shutting down" then.
	 */
	struct npd_timer_list *tl = grace_ms ? npd_loop_timers(cs->loop, NPD_DRAIN_HEADER_MS) : NULL;
	struct npd_list *pos = cs->waiting.next;

	cs->draining = true;
	while (pos != &cs->waiting) {
		struct npd_conn *c = npd_container_of(pos, struct npd_conn, waiting);
		pos = pos->next;
		if (!tl) {
			npd_stats_close_for(c, NPD_RESULT_SHUTDOWN);
			npd_conn_close(c, "shutting down");
			cs->cut_unheaded++;
			cs->cut++;
		} else if (c->timer.deadline_ms > cs->loop->now_ms + NPD_DRAIN_HEADER_MS) {
			npd_timer_arm(tl, &c->timer, cs->loop->now_ms);
		}
	}
}

void npd_conns_close_all(struct npd_conns *cs)
{
	while (!npd_list_empty(&cs->open)) {
		struct npd_conn *c = npd_container_of(cs->open.next, struct npd_conn, link);
		cs->cut_unheaded += c->state == NPD_CONN_HEADER;
		cs->cut++;
		npd_stats_close_for(c, NPD_RESULT_SHUTDOWN);
		npd_conn_close(c, "shutting down");
	}
}

bool npd_conns_bury(struct npd_conns *cs)
{
	bool any = false;

	while (!npd_list_empty(&cs->graveyard)) {
		struct npd_conn *c = npd_container_of(cs->graveyard.next, struct npd_conn, link);
		npd_list_del(&c->link);
		c->next_free = cs->free;
		cs->free = c;
		any = true;
	}
	return any;
}

void npd_conns_free(struct npd_conns *cs)
{
	while (cs->free) {
		struct npd_conn *c = cs->free;
		cs->free = c->next_free;
		free(c);
	}
}
