/*
 * test_npd_turn.c - every turn of a worker's loop is bounded (worker.h):
 * a connection reads at most NPD_TURN_BYTES from each side when it has the
 * loop and, when it had more, is queued on the ready list and carries on
 * when its place comes, without losing a byte; a turn serves one queued
 * connection, the one queued longest, and events for a queued connection
 * wait for its place; at most NPD_EXPIRIES_PER_TURN timers expire per turn,
 * earliest first; and while either kind of work is left over, the loop does
 * not wait in epoll_wait.
 *
 * The worker is set up but never started: the test plays its loop, turn by
 * turn, on connections whose sockets are TCP pairs on loopback.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "log.h"
#include "pairs.h"
#include "tap.h"
#include "worker.h"

static struct npd_worker w;
static struct npd_config *cfg;

static const char config_lua[] =
	"proxy_ports = { \"127.0.0.1:15999\" }\n"
	"proxy_port_mappings = { [15999] = \"svc\" }\n"
	"services = { svc = { connect = \"127.0.0.1:9\" } }\n"
	"proxy_header_timeout = 1\n";

static void bail(const char *why)
{
	printf("Bail out! %s\n", why);
	exit(1);
}

/*
 * A connection as npd_conn_open() makes it, waiting for its header, on a
 * socket that has sent nothing; the socket is then closed and its fd -1.
 */
static struct npd_conn *open_conn(void)
{
	union npd_sockaddr peer = {.sa.sa_family = AF_UNSPEC};
	int d[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, d) != 0)
		bail("socketpair failed");
	bool opened = npd_conn_open(&w.conns, w.gen, 0, d[0], &peer);
	close(d[1]);
	struct npd_conn *c = npd_container_of(w.conns.open.prev, struct npd_conn, link);
	if (!opened || npd_list_empty(&w.conns.open) || c->state != NPD_CONN_HEADER)
		bail("npd_conn_open did not leave a connection waiting for its header");
	close(c->relay.client.fd);
	c->relay.client.fd = -1;
	return c;
}

/* A connection in the relay, as conn.c leaves it once the backend is there. */
static struct npd_conn *relay_conn(int client_fd, int backend_fd)
{
	struct npd_conn *c = open_conn();

	npd_list_del(&c->waiting);
	npd_timer_cancel(&c->timer);
	c->state = NPD_CONN_RELAY;
	c->relay.client.fd = client_fd;
	c->relay.backend.fd = backend_fd;
	c->relay.client.readable = c->relay.client.writable = true;
	c->relay.backend.readable = c->relay.backend.writable = true;
	return c;
}

/* Free what npd_conn_close() put in the graveyard, as the loop's end of turn does. */
static void bury_all(void)
{
	npd_conns_bury(&w.conns);
}

/* The next turn: what the loop does around epoll_wait, with no events. */
static void next_turn(void)
{
	w.loop.turn++;
	npd_loop_run_ready(&w.loop);
}

/* epoll reports events on a side of c: what the loop's dispatch does. */
static void client_event(struct npd_conn *c, uint32_t events)
{
	c->client_watch.fn(c->client_watch.obj, events);
}

static void backend_event(struct npd_conn *c, uint32_t events)
{
	c->backend_watch.fn(c->backend_watch.obj, events);
}

/* Relay as readiness already noted allows: an event that brings nothing new. */
static void relay_now(struct npd_conn *c)
{
	client_event(c, 0);
}

/* Write the pattern into fd until it takes no more (or cap bytes); returns the count. */
static size_t fill(int fd, size_t cap)
{
	uint64_t sent = 0;

	pattern_fill(fd, &sent, cap);
	return (size_t)sent;
}

static bool queued(const struct npd_conn *c)
{
	return npd_task_queued(&c->again);
}

/*
 * A client with several turns' worth of data waiting: each turn reads one
 * budget, the connection stays queued while there is more, every byte
 * arrives in order, and once the client has nothing more it leaves the queue.
 */
static void test_budget_per_turn(void)
{
	int cl[2], be[2];

	if (tcp_pair(cl) != 0 || tcp_pair(be) != 0) {
		ok(0, "socket pairs");
		return;
	}
	size_t total = fill(cl[1], 16u << 20);
	if (total < 3 * NPD_TURN_BYTES) {
		skip("the socket buffers hold %zu bytes, not three turns' worth (SO_RCVBUFFORCE "
		     "needs CAP_NET_ADMIN)", total);
		close(cl[0]), close(cl[1]), close(be[0]), close(be[1]);
		return;
	}

	struct npd_conn *c = relay_conn(cl[0], be[0]);
	w.loop.turn++;
	relay_now(c);
	is_int((long)c->relay.client.bytes, NPD_TURN_BYTES, "the first turn reads one budget");
	ok(queued(c), "and queues the connection for the next turn");
	ok(npd_worker_timeout(&w) == 0, "epoll_wait does not wait while one is queued");

	/* An event in the same turn (the backend's EPOLLOUT, say) reads no more. */
	backend_event(c, EPOLLOUT);
	is_int((long)c->relay.client.bytes, NPD_TURN_BYTES, "a second event in the turn reads nothing more");
	/* Nor one in the next turn: the connection waits for its place in the queue. */
	w.loop.turn++;
	client_event(c, EPOLLIN);
	is_int((long)c->relay.client.bytes, NPD_TURN_BYTES, "an event for a queued connection waits");
	ok(queued(c), "and leaves it queued");

	uint64_t got = 0, before = c->relay.client.bytes;
	bool in_order = pattern_drain(be[1], &got), bounded = true, stayed = true;
	int turns = 1;
	for (int i = 0; i < 5000 && got < total; i++) {
		if (!queued(c)) {
			/* It ran dry for a moment: the next bytes bring an edge. */
			struct pollfd p = {.fd = cl[0], .events = POLLIN};
			poll(&p, 1, 10);
			w.loop.turn++;
			backend_event(c, EPOLLOUT); /* drained below, each turn */
			client_event(c, EPOLLIN);
		} else {
			next_turn();
		}
		turns++;
		bounded &= c->relay.client.bytes - before <= NPD_TURN_BYTES;
		stayed &= queued(c) || c->relay.client.bytes - before < NPD_TURN_BYTES;
		before = c->relay.client.bytes;
		in_order &= pattern_drain(be[1], &got);
	}
	is_int((long)got, (long)total, "every byte reached the backend");
	ok(in_order, "in order");
	ok(bounded, "no turn read more than NPD_TURN_BYTES");
	ok(stayed, "a turn that used its whole budget left the connection queued");
	ok(turns >= (int)(total / NPD_TURN_BYTES), "it took %d turns for %zu bytes", turns, total);
	/* A last turn may have spent its budget exactly: the next one finds nothing. */
	for (int i = 0; i < 3 && queued(c); i++)
		next_turn();
	ok(!queued(c), "with the client quiet, the connection is no longer queued");

	npd_conn_close(c, "test over");
	close(cl[1]);
	close(be[1]);
	bury_all();
}

/*
 * A small request is relayed at its event and leaves the connection off the
 * ready list; a connection moving bulk data waits for its place there, even
 * with an event of its own.
 */
static void test_small_is_not_queued(void)
{
	int cl[2], be[2];

	if (tcp_pair(cl) != 0 || tcp_pair(be) != 0) {
		ok(0, "socket pairs");
		return;
	}
	send(cl[1], "ping", 4, 0);
	struct npd_conn *c = relay_conn(cl[0], be[0]);
	w.loop.turn++;
	client_event(c, EPOLLIN);
	char buf[8];
	ok(recv(be[1], buf, sizeof(buf), 0) == 4, "a small request goes through at its event");
	ok(!queued(c), "and leaves the connection off the ready list");

	c->relay.client.bulk = true; /* as after a read that filled its buffer */
	send(cl[1], "bulk", 4, 0);
	w.loop.turn++;
	client_event(c, EPOLLIN);
	ok(queued(c) && c->relay.client.bytes == 4, "a bulk connection's event queues it, unread");
	next_turn();
	ok(!queued(c) && c->relay.client.bytes == 8, "its place comes at the next turn");
	ok(recv(be[1], buf, sizeof(buf), 0) == 4, "and the bytes go through");
	npd_conn_close(c, "test over");
	close(cl[1]);
	close(be[1]);
	bury_all();
}

/* Each side has its own budget: the direction served first cannot starve the other. */
static void test_both_directions(void)
{
	int cl[2], be[2];

	if (tcp_pair(cl) != 0 || tcp_pair(be) != 0) {
		ok(0, "socket pairs");
		return;
	}
	fill(cl[1], 2 * NPD_TURN_BYTES);
	fill(be[1], 2 * NPD_TURN_BYTES);
	struct npd_conn *c = relay_conn(cl[0], be[0]);
	w.loop.turn++;
	relay_now(c);
	is_int((long)c->relay.client.bytes, NPD_TURN_BYTES, "client to backend: one budget in the turn");
	is_int((long)c->relay.backend.bytes, NPD_TURN_BYTES, "backend to client: one budget as well");
	ok(queued(c), "queued for more");
	npd_conn_close(c, "test over");
	close(cl[1]);
	close(be[1]);
	bury_all();
}

/*
 * Three connections with more than a turn's worth each: a turn serves one,
 * the one queued longest, which goes to the tail: round robin.
 */
static void test_one_queued_per_turn(void)
{
	enum { N = 3 };
	int cl[N][2], be[N][2];
	struct npd_conn *c[N];

	for (int i = 0; i < N; i++) {
		if (tcp_pair(cl[i]) != 0 || tcp_pair(be[i]) != 0) {
			ok(0, "socket pairs");
			return;
		}
		if (fill(cl[i][1], 2 * NPD_TURN_BYTES) < 2 * NPD_TURN_BYTES)
			diag("connection %d has less than two turns' worth waiting", i);
		c[i] = relay_conn(cl[i][0], be[i][0]);
	}
	w.loop.turn++;
	for (int i = 0; i < N; i++)
		relay_now(c[i]);
	bool all_queued = true;
	for (int i = 0; i < N; i++)
		all_queued &= queued(c[i]);
	ok(all_queued, "each read its budget and is queued");

	bool one_each = true;
	for (int t = 0; t < N; t++) {
		uint64_t before[N];
		for (int i = 0; i < N; i++)
			before[i] = c[i]->relay.client.bytes;
		next_turn();
		for (int i = 0; i < N; i++) {
			uint64_t got = 0;
			pattern_drain(be[i][1], &got);
			/* In turn t, connection t mod N, and only it, moves. */
			one_each &= (c[i]->relay.client.bytes != before[i]) == (i == t % N);
		}
	}
	ok(one_each, "each turn serves the one queued longest, and only it");
	for (int i = 0; i < N; i++) {
		npd_conn_close(c[i], "test over");
		close(cl[i][1]);
		close(be[i][1]);
	}
	bury_all();
}

/* A connection waiting for its header, with a deadline duration_ms after at. */
static struct npd_conn *waiting_conn(int duration_ms, int64_t at)
{
	struct npd_conn *c = open_conn();

	npd_timer_arm(npd_loop_timers(&w.loop, duration_ms), &c->timer, at);
	return c;
}

/*
 * Timers due at once expire NPD_EXPIRIES_PER_TURN a turn, earliest first
 * across lists of different durations, and the loop does not wait while some
 * are still due; one not due yet stays.
 */
static void test_expiries_per_turn(void)
{
	enum { N = 3 * NPD_EXPIRIES_PER_TURN + 10 };
	struct npd_conn *c[N];

	/*
	 * Deadlines t0 + 1000 + 2i (i even, the 1 s list) and t0 + 1001 + 2i (i
	 * odd, the 1.5 s list): increasing, alternating between the lists, and
	 * all in the past. One more is due in a second.
	 */
	int64_t now = npd_now_ms(), t0 = now - 10000;
	for (int i = 0; i < N; i++)
		c[i] = waiting_conn(i % 2 ? 1500 : 1000, i % 2 ? t0 + 2 * i - 499 : t0 + 2 * i);
	struct npd_conn *later = waiting_conn(1000, now);
	size_t open_before = w.conns.n;

	w.loop.now_ms = now;
	int turns = 0;
	bool more = true, bounded = true, waits_not = true;
	while (more && turns < N) {
		size_t n0 = w.conns.n;
		w.loop.turn++;
		more = npd_worker_expire(&w);
		turns++;
		bounded &= n0 - w.conns.n <= NPD_EXPIRIES_PER_TURN;
		if (more)
			waits_not &= npd_worker_timeout(&w) == 0;
	}
	is_int((long)(open_before - w.conns.n), N, "every due timer expired");
	is_int(turns, (N + NPD_EXPIRIES_PER_TURN - 1) / NPD_EXPIRIES_PER_TURN,
	       "in as many turns as the budget makes");
	ok(bounded, "none expired more than NPD_EXPIRIES_PER_TURN");
	ok(waits_not, "epoll_wait does not wait while some are still due");
	ok(later->state != NPD_CONN_CLOSED, "one not due yet stays");
	ok(npd_worker_timeout(&w) > 0, "and the loop waits for it");

	/* The graveyard holds them in the order they were closed: by deadline. */
	bool in_order = true;
	int i = 0;
	for (struct npd_list *n = w.conns.graveyard.next; n != &w.conns.graveyard; n = n->next, i++)
		in_order &= npd_container_of(n, struct npd_conn, link) == c[i];
	ok(in_order && i == N, "earliest first, across lists");

	npd_conn_close(later, "test over");
	bury_all();
}

int main(void)
{
	struct npd_config_diag dg = {0};

	npd_log_setup(false, NPD_LOG_ERROR); /* the connections' lines are not the point */
	if (npd_config_load_string("t.lua", config_lua, &cfg, &dg) != 0) {
		diag("config: %s", dg.error);
		return 1;
	}
	if (npd_worker_init(&w, 0, 1) != 0) {
		diag("npd_worker_init: %s", strerror(errno));
		return 1;
	}
	w.gen = npd_gen_new(cfg, 1);
	w.loop.now_ms = 1;

	test_budget_per_turn();
	test_small_is_not_queued();
	test_both_directions();
	test_one_queued_per_turn();
	test_expiries_per_turn();

	/* What the worker holds, freed as its shutdown does, for the leak check. */
	npd_conns_free(&w.conns);
	npd_buf_pool_free(&w.bufs);
	npd_loop_free(&w.loop);
	npd_gen_release(w.gen);
	close(w.wakefd);
	close(w.reserve_fd);
	pthread_mutex_destroy(&w.lock);
	return done_testing();
}
