/*
 * list.h - an intrusive doubly linked list: a node lives inside the struct it
 * links, so linking and unlinking allocate nothing and cost O(1).
 */
#ifndef NPD_LIST_H
#define NPD_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct npd_list {
	struct npd_list *prev, *next;
};

#define npd_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static inline void npd_list_init(struct npd_list *l)
{
	l->prev = l->next = l;
}

static inline bool npd_list_empty(const struct npd_list *l)
{
	return l->next == l;
}

/* A node that is in no list points at itself (after npd_list_init or npd_list_del). */
static inline bool npd_list_linked(const struct npd_list *n)
{
	return n->next != n;
}

static inline void npd_list_add_tail(struct npd_list *head, struct npd_list *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

static inline void npd_list_del(struct npd_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

#endif /* NPD_LIST_H */
