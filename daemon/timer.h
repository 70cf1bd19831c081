/*
 * timer.h - deadlines as FIFO lists, one list per duration.
 *
 * Every entry of a list was armed with the same duration, so insertion order
 * is deadline order: arming appends, re-arming moves to the tail, expiry
 * looks only at the head. Each operation is O(1), and a worker has only as
 * many lists as distinct durations appear in its config (header timeout,
 * each service's connect and idle timeouts).
 */
#ifndef NPD_TIMER_H
#define NPD_TIMER_H

#include <stddef.h>
#include <stdint.h>

#include "list.h"

struct npd_timer_list {
	int duration_ms;
	struct npd_list head;
};

struct npd_timer {
	struct npd_list node;
	int64_t deadline_ms;
};

/* Milliseconds on the monotonic clock. */
int64_t npd_now_ms(void);

static inline void npd_timer_init(struct npd_timer *t)
{
	npd_list_init(&t->node);
}

/* Arm (or re-arm) t to expire duration_ms from now; it leaves any list it was in. */
static inline void npd_timer_arm(struct npd_timer_list *l, struct npd_timer *t, int64_t now)
{
	if (npd_list_linked(&t->node))
		npd_list_del(&t->node);
	t->deadline_ms = now + l->duration_ms;
	npd_list_add_tail(&l->head, &t->node);
}

static inline void npd_timer_cancel(struct npd_timer *t)
{
	if (npd_list_linked(&t->node))
		npd_list_del(&t->node);
}

/*
 * The timer of the n lists that is due first (the earliest of their heads),
 * or NULL when all are empty. O(n): a worker has a handful of lists.
 */
static inline struct npd_timer *npd_timer_first(struct npd_timer_list *const *lists, size_t n)
{
	struct npd_timer *first = NULL;

	for (size_t i = 0; i < n; i++) {
		const struct npd_list *h = &lists[i]->head;
		if (npd_list_empty(h))
			continue;
		struct npd_timer *t = npd_container_of(h->next, struct npd_timer, node);
		if (!first || t->deadline_ms < first->deadline_ms)
			first = t;
	}
	return first;
}

#endif /* NPD_TIMER_H */
