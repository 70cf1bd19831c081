/*
 * test_npd_relay.c - the relay alone (relay.h), over TCP pairs on loopback,
 * with no worker and no connection around it: each test plays the loop with
 * an epoll instance of its own (edge-triggered, as the worker registers the
 * sides), notes what it reports, runs the relay and checks its verdict and
 * what each peer received.
 *
 *   client peer ── cl[1] ═ cl[0] ─┐            ┌─ be[0] ═ be[1] ── backend peer
 *                                 └─ relay ────┘
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pairs.h"
#include "relay.h"
#include "tap.h"

static struct npd_buf_pool pool;

struct rig {
	int cl[2], be[2];
	int epfd;
	uint64_t turn;
	struct npd_relay r;
};

static const char *verdict_name(enum npd_relay_verdict v)
{
	switch (v) {
	case NPD_RELAY_IDLE:
		return "IDLE";
	case NPD_RELAY_MOVED:
		return "MOVED";
	case NPD_RELAY_STARVED:
		return "STARVED";
	case NPD_RELAY_LINGER:
		return "LINGER";
	case NPD_RELAY_DONE:
		return "DONE";
	case NPD_RELAY_FAILED:
		return "FAILED";
	}
	return "?";
}

#define is_verdict(got, want, ...)                                                       \
	do {                                                                             \
		enum npd_relay_verdict v_ = (got);                                       \
		if (!ok(v_ == (want), __VA_ARGS__))                                      \
			diag("  got %s, want %s", verdict_name(v_), verdict_name(want)); \
	} while (0)

/* Two pairs and a relay between them; buf_size as tcp_pair_sized() takes it. */
static bool rig_up(struct rig *g, int buf_size)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET};

	memset(g, 0, sizeof(*g));
	if (tcp_pair_sized(g->cl, buf_size) != 0 || tcp_pair_sized(g->be, buf_size) != 0)
		return false;
	g->epfd = epoll_create1(0);
	npd_relay_init(&g->r, &pool, g->cl[0], g->be[0]);
	ev.data.ptr = &g->r.client;
	epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->cl[0], &ev);
	ev.data.ptr = &g->r.backend;
	epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->be[0], &ev);
	return true;
}

static void rig_down(struct rig *g)
{
	npd_side_discard(&g->r, &g->r.client);
	npd_side_discard(&g->r, &g->r.backend);
	close(g->epfd);
	for (int i = 0; i < 2; i++) {
		if (g->cl[i] >= 0)
			close(g->cl[i]);
		if (g->be[i] >= 0)
			close(g->be[i]);
	}
}

/* Note what epoll reports, waiting at most wait_ms for something. Returns the events' count. */
static int note_events(struct rig *g, int wait_ms)
{
	struct epoll_event evs[4];
	int n = epoll_wait(g->epfd, evs, 4, wait_ms);

	for (int i = 0; i < n; i++)
		npd_side_note(evs[i].data.ptr, evs[i].events);
	return n < 0 ? 0 : n;
}

/* One turn of the loop: the events there are, then the relay (in the same turn, or a new one). */
static enum npd_relay_verdict step(struct rig *g, bool new_turn)
{
	note_events(g, 0);
	if (new_turn)
		g->turn++;
	return npd_relay_move(&g->r, g->turn);
}

/*
 * Turns until the relay has nothing left to do: an IDLE verdict with no
 * event pending, or an end (LINGER, DONE, FAILED). Each idle wait is for an
 * event, at most a second: loopback delivers at once.
 */
static enum npd_relay_verdict settle(struct rig *g)
{
	enum npd_relay_verdict v = NPD_RELAY_IDLE;

	for (int i = 0; i < 10000; i++) {
		v = step(g, true);
		if (v == NPD_RELAY_LINGER || v == NPD_RELAY_DONE || v == NPD_RELAY_FAILED)
			return v;
		if (v == NPD_RELAY_IDLE && note_events(g, 0) == 0)
			return v;
	}
	return v;
}

/* Read what fd has (at most cap bytes); waits up to a second for the first. -1: error. */
static ssize_t take(int fd, void *buf, size_t cap)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	size_t got = 0;

	if (poll(&p, 1, 1000) <= 0)
		return 0;
	while (got < cap) {
		ssize_t n = recv(fd, (char *)buf + got, cap - got, 0);
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0)
			return got ? (ssize_t)got : -1;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* fd's peer has sent its FIN and nothing more is waiting: recv() says 0. */
static bool at_eof(int fd)
{
	char c;
	struct pollfd p = {.fd = fd, .events = POLLIN};

	poll(&p, 1, 1000);
	return recv(fd, &c, 1, 0) == 0;
}

/* Nothing waits on fd and no FIN has come: recv() would block. (Loopback delivers at once.) */
static bool open_and_quiet(int fd)
{
	char c;

	return recv(fd, &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN;
}

/* A reset, not a FIN: close with a zero linger time. */
static void reset(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static void test_both_ways(void)
{
	struct rig g;
	char buf[64];

	if (!rig_up(&g, 0)) {
		ok(0, "socket pairs");
		return;
	}
	send(g.cl[1], "hello", 5, 0);
	send(g.be[1], "world", 5, 0);
	is_verdict(step(&g, true), NPD_RELAY_MOVED, "bytes both ways: MOVED");
	ok(take(g.be[1], buf, sizeof(buf)) == 5 && memcmp(buf, "hello", 5) == 0,
	   "the backend got the client's bytes");
	ok(take(g.cl[1], buf, sizeof(buf)) == 5 && memcmp(buf, "world", 5) == 0,
	   "the client got the backend's");
	is_verdict(settle(&g), NPD_RELAY_IDLE, "nothing more: IDLE");
	ok(!g.r.client.in && !g.r.backend.in, "an idle relay holds no buffer");
	is_int(g.r.client.bytes + g.r.backend.bytes, 10, "both sides' bytes counted");
	rig_down(&g);
}

/* The client says all it has first; the backend goes on talking, then ends. */
static void test_half_close_client_first(void)
{
	struct rig g;
	char buf[64];

	if (!rig_up(&g, 0)) {
		ok(0, "socket pairs");
		return;
	}
	send(g.cl[1], "request", 7, 0);
	shutdown(g.cl[1], SHUT_WR);
	is_verdict(settle(&g), NPD_RELAY_IDLE, "client's FIN passed on: the relay goes on");
	ok(take(g.be[1], buf, sizeof(buf)) == 7 && at_eof(g.be[1]),
	   "the backend got the request, then the FIN");
	ok(g.r.backend.shut && !g.r.client.shut, "only the backend's write end shut");
	send(g.be[1], "reply, part 1", 13, 0);
	settle(&g);
	send(g.be[1], "; part 2", 8, 0);
	is_verdict(settle(&g), NPD_RELAY_IDLE, "the backend still talks to a half-closed client");
	ok(take(g.cl[1], buf, sizeof(buf)) == 21 && memcmp(buf, "reply, part 1; part 2", 21) == 0,
	   "the client got the whole reply");
	shutdown(g.be[1], SHUT_WR);
	is_verdict(settle(&g), NPD_RELAY_DONE, "the backend's FIN too: DONE");
	/* Both ways said all: the FIN to the client is the close's, a system call less. */
	ok(open_and_quiet(g.cl[1]), "the client's FIN is left to the close");
	close(g.cl[0]);
	g.cl[0] = -1;
	ok(at_eof(g.cl[1]), "which brings it");
	ok(!npd_relay_failed(&g.r), "no side failed");
	rig_down(&g);
}

/* The backend ends first; the client goes on sending, then ends. */
static void test_half_close_backend_first(void)
{
	struct rig g;
	char buf[64];

	if (!rig_up(&g, 0)) {
		ok(0, "socket pairs");
		return;
	}
	send(g.be[1], "banner", 6, 0);
	shutdown(g.be[1], SHUT_WR);
	is_verdict(settle(&g), NPD_RELAY_IDLE, "backend's FIN passed on: the relay goes on");
	ok(take(g.cl[1], buf, sizeof(buf)) == 6 && at_eof(g.cl[1]),
	   "the client got the banner, then the FIN");
	send(g.cl[1], "late words", 10, 0);
	is_verdict(settle(&g), NPD_RELAY_IDLE, "the half-closed backend still hears the client");
	ok(take(g.be[1], buf, sizeof(buf)) == 10 && memcmp(buf, "late words", 10) == 0,
	   "the backend got them");
	shutdown(g.cl[1], SHUT_WR);
	is_verdict(settle(&g), NPD_RELAY_DONE, "the client's FIN too: DONE");
	ok(open_and_quiet(g.be[1]), "the backend's FIN is left to the close");
	close(g.be[0]);
	g.be[0] = -1;
	ok(at_eof(g.be[1]), "which brings it");
	rig_down(&g);
}

/*
 * The backend resets after its last words while the client is still
 * sending: the client gets those words and our FIN, and the relay asks for a
 * lingering close, whose drain drops what the client still sends until its
 * end.
 */
static void test_linger(void)
{
	struct rig g;
	char buf[64];

	if (!rig_up(&g, 0)) {
		ok(0, "socket pairs");
		return;
	}
	send(g.cl[1], "upload ", 7, 0);
	settle(&g);
	send(g.be[1], "413 too large", 13, 0);
	/* Its socket sends the words, then the reset: the order the kernel keeps. */
	struct pollfd p = {.fd = g.be[0], .events = POLLIN};
	poll(&p, 1, 1000);
	reset(g.be[1]);
	g.be[1] = -1;
	send(g.cl[1], "more upload", 11, 0);
	enum npd_relay_verdict v = settle(&g);
	is_verdict(v, NPD_RELAY_LINGER, "the backend failed first, the client still sends: LINGER");
	ok(take(g.cl[1], buf, sizeof(buf)) == 13 && memcmp(buf, "413 too large", 13) == 0,
	   "the client got the backend's last words before its reset");
	ok(at_eof(g.cl[1]), "and our FIN after them");
	ok(g.r.backend.error != 0 && npd_relay_failed(&g.r) == &g.r.backend,
	   "the backend is the side that failed");

	send(g.cl[1], "still more", 10, 0);
	note_events(&g, 1000);
	is_verdict(npd_relay_drain(&g.r, ++g.turn), NPD_RELAY_IDLE,
		   "draining: what the client sends is dropped, then IDLE");
	ok(!g.r.client.in, "nothing of it is kept");
	shutdown(g.cl[1], SHUT_WR);
	note_events(&g, 1000);
	is_verdict(npd_relay_drain(&g.r, ++g.turn), NPD_RELAY_FAILED,
		   "the client's end: FAILED, as the relay ended");
	rig_down(&g);
}

/*
 * The client sends a request and resets: the request still reaches the
 * backend, followed by a FIN, and the relay ends FAILED, the client's
 * error.
 */
static void test_reset_costs_no_bytes(void)
{
	struct rig g;
	char buf[64];

	if (!rig_up(&g, 0)) {
		ok(0, "socket pairs");
		return;
	}
	send(g.cl[1], "final request", 13, 0);
	struct pollfd p = {.fd = g.cl[0], .events = POLLIN};
	poll(&p, 1, 1000);
	reset(g.cl[1]);
	g.cl[1] = -1;
	is_verdict(settle(&g), NPD_RELAY_FAILED, "the client reset: FAILED");
	ok(take(g.be[1], buf, sizeof(buf)) == 13 && memcmp(buf, "final request", 13) == 0,
	   "the backend got everything the client sent before its reset");
	ok(at_eof(g.be[1]), "then our FIN");
	ok(npd_relay_failed(&g.r) == &g.r.client && g.r.client.error == ECONNRESET,
	   "the client is the side that failed, with ECONNRESET");
	rig_down(&g);
}

/*
 * Urgent data: recv() stops at its mark. EPOLLPRI makes the relay read the
 * side until EAGAIN instead of taking a short read for all there was, so
 * the bytes after the mark are not left waiting for an edge that will not
 * come. (The urgent byte itself is out of band and not relayed.)
 */
static void test_urgent_data(void)
{
	struct rig g;
	char buf[64];

	if (!rig_up(&g, 0)) {
		ok(0, "socket pairs");
		return;
	}
	send(g.cl[1], "before", 6, 0);
	send(g.cl[1], "!", 1, MSG_OOB);
	send(g.cl[1], "after", 5, 0);
	struct pollfd p = {.fd = g.cl[0], .events = POLLPRI};
	poll(&p, 1, 1000);
	step(&g, true);
	ok(!g.r.client.short_read_drains, "EPOLLPRI: the side is read until EAGAIN");
	ssize_t n = take(g.be[1], buf, sizeof(buf));
	ok(n == 11 && memcmp(buf, "beforeafter", 11) == 0,
	   "one turn relays the bytes on both sides of the mark");
	if (n != 11)
		diag("  the backend got %zd bytes", n);
	rig_down(&g);
}

/*
 * The client sends more than the backend takes, then its FIN: the relay
 * holds one buffer while the backend is not writable (backpressure), reads
 * no more meanwhile, and delivers every byte and then the FIN once the
 * backend reads: an end that came with data still buffered waits for it.
 */
static void test_backpressure_and_eof_with_data(void)
{
	struct rig g;
	const uint64_t total = 4 << 20;
	uint64_t sent = 0, got = 0;

	if (!rig_up(&g, 64 << 10)) {
		ok(0, "socket pairs");
		return;
	}
	pattern_fill(g.cl[1], &sent, total);
	is_verdict(settle(&g), NPD_RELAY_IDLE, "the backend takes no more: IDLE");
	ok(!g.r.backend.writable, "the backend is not writable");
	ok(g.r.client.in && g.r.client.in->off < g.r.client.in->len,
	   "the relay holds what it read for it");
	uint64_t read_before = g.r.client.bytes;
	for (int i = 0; i < 3; i++)
		is_verdict(step(&g, true), NPD_RELAY_IDLE, "turn %d without an edge: IDLE", i + 1);
	is_int(g.r.client.bytes, read_before, "and nothing more is read from the client");
	ok(g.r.client.bytes < sent || sent < total, "the rest waits in the client's socket");

	bool in_order = true;
	for (int i = 0; i < 100000 && (sent < total || !g.r.backend.shut); i++) {
		pattern_fill(g.cl[1], &sent, total);
		if (sent == total && !g.r.client.fin_seen && !g.r.client.eof)
			shutdown(g.cl[1], SHUT_WR); /* once; FIN again is harmless */
		in_order &= pattern_drain(g.be[1], &got);
		settle(&g);
	}
	in_order &= pattern_drain(g.be[1], &got);
	for (int i = 0; i < 1000 && got < total; i++) {
		struct pollfd p = {.fd = g.be[1], .events = POLLIN};
		poll(&p, 1, 1000);
		in_order &= pattern_drain(g.be[1], &got);
		settle(&g);
	}
	is_int(got, total, "every byte reached the backend");
	ok(in_order, "in order");
	ok(g.r.client.eof && at_eof(g.be[1]), "then the FIN");
	rig_down(&g);
}

/*
 * A side with more than a turn's budget waiting: the relay reads one budget
 * and says STARVED; in the same turn it reads nothing more; a new turn
 * gives a new budget.
 */
static void test_budget_starves(void)
{
	struct rig g;
	uint64_t sent = 0, got = 0;

	if (!rig_up(&g, 0)) {
		ok(0, "socket pairs");
		return;
	}
	pattern_fill(g.cl[1], &sent, 2 * NPD_TURN_BYTES + 1);
	if (sent <= NPD_TURN_BYTES) {
		skip("the socket buffers hold %llu bytes, less than a turn's budget (SO_RCVBUFFORCE "
		     "needs CAP_NET_ADMIN)", (unsigned long long)sent);
		skip("no budget to exhaust");
		skip("no budget to exhaust");
		rig_down(&g);
		return;
	}
	is_verdict(step(&g, true), NPD_RELAY_STARVED, "more than the turn's budget: STARVED");
	is_int(g.r.client.bytes, NPD_TURN_BYTES, "after reading exactly one budget");
	pattern_drain(g.be[1], &got);
	is_verdict(step(&g, false), NPD_RELAY_STARVED, "the same turn again: still STARVED");
	is_int(g.r.client.bytes, NPD_TURN_BYTES, "having read nothing more");
	step(&g, true);
	ok(g.r.client.bytes > NPD_TURN_BYTES, "a new turn reads on");
	rig_down(&g);
}

/*
 * The send path send_first shares (npd_relay_flush): to a peer that has
 * reset, it sends nothing, marks the side failed and gives the buffer back.
 */
static void test_flush_to_failed(void)
{
	struct rig g;

	if (!rig_up(&g, 0)) {
		ok(0, "socket pairs");
		return;
	}
	reset(g.be[1]);
	g.be[1] = -1;
	struct pollfd p = {.fd = g.be[0], .events = POLLIN};
	poll(&p, 1, 1000); /* the reset has arrived */
	struct npd_buf *b = npd_buf_get(&pool, false);
	memcpy(b->data, "header", 6);
	b->len = 6;
	g.r.client.in = b;
	g.r.backend.writable = true;
	size_t n = npd_relay_flush(&g.r, &g.r.client, &g.r.backend);
	ok(n == 0 && g.r.backend.error != 0, "flush to a reset peer: nothing sent, the side failed");
	ok(!g.r.client.in, "and the buffer was given back");
	rig_down(&g);
}

int main(void)
{
	test_both_ways();
	test_half_close_client_first();
	test_half_close_backend_first();
	test_linger();
	test_reset_costs_no_bytes();
	test_urgent_data();
	test_backpressure_and_eof_with_data();
	test_budget_starves();
	test_flush_to_failed();
	is_int(pool.nbulk_lent, 0, "every bulk buffer was given back");
	npd_buf_pool_free(&pool);
	return done_testing();
}
