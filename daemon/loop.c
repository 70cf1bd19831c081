/*
 * loop.c - the event loop's mechanics: epoll registration and dispatch by
 * callback, the timer lists, the ready list.
 */
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

int64_t npd_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int npd_loop_init(struct npd_loop *l)
{
	l->timers = NULL;
	l->ntimers = 0;
	l->now_ms = 0;
	l->turn = 0;
	l->stopped = false;
	npd_list_init(&l->ready);
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	return l->epfd < 0 ? -1 : 0;
}

void npd_loop_free(struct npd_loop *l)
{
	for (size_t i = 0; i < l->ntimers; i++)
		free(l->timers[i]);
	free(l->timers);
	l->timers = NULL;
	l->ntimers = 0;
	if (l->epfd >= 0)
		close(l->epfd);
	l->epfd = -1;
}

int npd_watch_add(struct npd_loop *l, int fd, uint32_t events, struct npd_watch *w)
{
	struct epoll_event ev = {.events = events, .data.ptr = w};

	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int npd_watch_mod(struct npd_loop *l, int fd, uint32_t events, struct npd_watch *w)
{
	struct epoll_event ev = {.events = events, .data.ptr = w};

	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
}

void npd_watch_del(struct npd_loop *l, int fd)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
}

void npd_loop_dispatch(struct npd_loop *l, const struct epoll_event *evs, int n)
{
	for (int i = 0; i < n && !l->stopped; i++) {
		const struct npd_watch *w = evs[i].data.ptr;
		w->fn(w->obj, evs[i].events);
	}
}

struct npd_timer_list *npd_loop_timers(struct npd_loop *l, int duration_ms)
{
	for (size_t i = 0; i < l->ntimers; i++)
		if (l->timers[i]->duration_ms == duration_ms)
			return l->timers[i];

	struct npd_timer_list **grown = realloc(l->timers, (l->ntimers + 1) * sizeof(*grown));
	if (!grown)
		return NULL;
	l->timers = grown;
	struct npd_timer_list *tl = malloc(sizeof(*tl));
	if (!tl)
		return NULL;
	tl->duration_ms = duration_ms;
	npd_list_init(&tl->head);
	l->timers[l->ntimers++] = tl;
	return tl;
}

/* The timer due first (the earliest of the lists' heads), or NULL when none is armed. */
static struct npd_timer *first_timer(const struct npd_loop *l)
{
	struct npd_timer *first = NULL;

	for (size_t i = 0; i < l->ntimers; i++) {
		const struct npd_list *h = &l->timers[i]->head;
		if (npd_list_empty(h))
			continue;
		struct npd_timer *t = npd_container_of(h->next, struct npd_timer, node);
		if (!first || t->deadline_ms < first->deadline_ms)
			first = t;
	}
	return first;
}

int64_t npd_loop_first_deadline(const struct npd_loop *l)
{
	const struct npd_timer *t = first_timer(l);

	return t ? t->deadline_ms : -1;
}

bool npd_loop_expire(struct npd_loop *l, int max)
{
	for (int n = 0; n < max; n++) {
		struct npd_timer *t = first_timer(l);
		if (!t || t->deadline_ms > l->now_ms)
			return false;
		npd_timer_cancel(t);
		t->fn(t->obj);
	}
	struct npd_timer *t = first_timer(l);
	return t && t->deadline_ms <= l->now_ms;
}

void npd_loop_run_ready(struct npd_loop *l)
{
	if (npd_list_empty(&l->ready))
		return;
	struct npd_task *t = npd_container_of(l->ready.next, struct npd_task, node);
	npd_list_del(&t->node);
	t->fn(t->obj);
}
