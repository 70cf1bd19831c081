/*
 * loop.h - what a worker's event loop knows: descriptors, timers and work
 * put off to a later turn, each as a callback with the object it is for.
 * The loop calls back; it never knows what a connection or a listener is
 * (the way redis' ae and libuv keep theirs).
 *
 * Timers are FIFO lists, one list per duration: every entry of a list was
 * armed with the same duration, so insertion order is deadline order;
 * arming appends, re-arming moves to the tail, expiry looks only at the
 * head. Each operation is O(1), and a loop has only as many lists as
 * distinct durations appear in its config (header timeout, each service's
 * connect and idle timeouts, the lingering close).
 */
#ifndef NPD_LOOP_H
#define NPD_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "list.h"

/*
 * A descriptor in the epoll set: its events go to fn(obj, events). The
 * struct must stay where it is while registered, and until the end of the
 * turn in which it leaves the set (a batch of events may still name it).
 */
struct npd_watch {
	void (*fn)(void *obj, uint32_t events);
	void *obj;
};

struct npd_timer {
	struct npd_list node;
	int64_t deadline_ms;
	void (*fn)(void *obj); /* called once at expiry, the timer already disarmed */
	void *obj;
};

struct npd_timer_list {
	int duration_ms;
	struct npd_list head;
};

/*
 * Work that must go on at a later turn (a connection that used its turn's
 * budget with more to read): queued on the loop's ready list, run(obj) when
 * its place comes, one task per turn, the one queued longest.
 */
struct npd_task {
	struct npd_list node;
	void (*fn)(void *obj);
	void *obj;
};

struct npd_loop {
	int epfd;
	int64_t now_ms; /* the clock, read once per loop turn */
	uint64_t turn;	/* loop turns so far, from 1: relay budgets are per turn */
	struct npd_timer_list **timers; /* one list per distinct duration; never moved */
	size_t ntimers;
	struct npd_list ready; /* tasks, oldest first */
	bool stopped; /* a callback ended the loop: the rest of its batch is not dispatched */
};

/* Milliseconds on the monotonic clock. */
int64_t npd_now_ms(void);

/* An empty loop with its epoll instance; -1 with errno when that fails. */
int npd_loop_init(struct npd_loop *l);
/* Free the timer lists and close the epoll instance. */
void npd_loop_free(struct npd_loop *l);

/* Register fd for events (EPOLL* flags) with w; 0, or -1 with errno. */
int npd_watch_add(struct npd_loop *l, int fd, uint32_t events, struct npd_watch *w);
/* Change the events fd is watched for (0: none for now). */
int npd_watch_mod(struct npd_loop *l, int fd, uint32_t events, struct npd_watch *w);
void npd_watch_del(struct npd_loop *l, int fd);

/* Call the watch of each of epoll's n events, until one sets stopped. */
struct epoll_event;
void npd_loop_dispatch(struct npd_loop *l, const struct epoll_event *evs, int n);

static inline void npd_timer_init(struct npd_timer *t, void (*fn)(void *), void *obj)
{
	npd_list_init(&t->node);
	t->fn = fn;
	t->obj = obj;
}

/* The timer list for a duration, created on first use. NULL only when out of memory. */
struct npd_timer_list *npd_loop_timers(struct npd_loop *l, int duration_ms);

/* Arm (or re-arm) t to expire duration_ms from now; it leaves any list it was in. */
static inline void npd_timer_arm(struct npd_timer_list *tl, struct npd_timer *t, int64_t now)
{
	if (npd_list_linked(&t->node))
		npd_list_del(&t->node);
	t->deadline_ms = now + tl->duration_ms;
	npd_list_add_tail(&tl->head, &t->node);
}

static inline void npd_timer_cancel(struct npd_timer *t)
{
	if (npd_list_linked(&t->node))
		npd_list_del(&t->node);
}

/* The deadline due first, or -1 when no timer is armed. O(lists). */
int64_t npd_loop_first_deadline(const struct npd_loop *l);

/*
 * Expire the timers due at now_ms, earliest first, at most max of them.
 * Returns true when some are still due.
 */
bool npd_loop_expire(struct npd_loop *l, int max);

static inline void npd_task_init(struct npd_task *t, void (*fn)(void *), void *obj)
{
	npd_list_init(&t->node);
	t->fn = fn;
	t->obj = obj;
}

static inline bool npd_task_queued(const struct npd_task *t)
{
	return npd_list_linked(&t->node);
}

/* Queue t at the tail of the ready list, unless it is queued already. */
static inline void npd_loop_defer(struct npd_loop *l, struct npd_task *t)
{
	if (!npd_task_queued(t))
		npd_list_add_tail(&l->ready, &t->node);
}

static inline void npd_task_cancel(struct npd_task *t)
{
	if (npd_task_queued(t))
		npd_list_del(&t->node);
}

/* Take the task queued longest off the ready list and run it, if there is one. */
void npd_loop_run_ready(struct npd_loop *l);

#endif /* NPD_LOOP_H */
