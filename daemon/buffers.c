/*
 * buffers.c - the pool of relay buffers: free lists of small and bulk
 * buffers, reused so that the relay's hot path allocates nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "buffers.h"

#define FREE_SMALL_KEPT 64 /* beyond that, drained buffers go back to the system */
#define FREE_BULK_KEPT 4   /* and bulk ones: 4 MiB kept, the rest lent afresh */

/* One of a free list's buffers, or a new one of cap bytes. */
static struct npd_buf *take(struct npd_buf **list, size_t *n, uint32_t cap, enum npd_buf_kind kind)
{
	struct npd_buf *b = *list;

	if (b) {
		*list = b->next_free;
		(*n)--;
	} else if ((b = malloc(sizeof(*b) + cap))) {
		b->cap = cap;
		b->kind = (uint8_t)kind;
	} else {
		return NULL;
	}
	b->off = b->len = 0;
	return b;
}

struct npd_buf *npd_buf_get(struct npd_buf_pool *p, bool bulk)
{
	struct npd_buf *b;

	if (bulk && p->nbulk_lent < NPD_BULK_MAX &&
	    (b = take(&p->free_bulk, &p->nfree_bulk, NPD_BULK_SIZE, NPD_BUF_BULK))) {
		p->nbulk_lent++;
		return b;
	}
	return take(&p->free_small, &p->nfree_small, NPD_BUF_SIZE, NPD_BUF_SMALL);
}

struct npd_buf *npd_buf_oversize(const struct npd_buf *b, size_t cap)
{
	struct npd_buf *big = malloc(sizeof(*big) + cap);

	if (!big)
		return NULL;
	big->kind = NPD_BUF_OVERSIZE;
	big->cap = (uint32_t)cap;
	big->off = b->off;
	big->len = b->len;
	memcpy(big->data, b->data, b->len);
	return big;
}

void npd_buf_put(struct npd_buf_pool *p, struct npd_buf *b)
{
	struct npd_buf **list;
	size_t *n, keep;

	switch (b->kind) {
	case NPD_BUF_SMALL:
		list = &p->free_small, n = &p->nfree_small, keep = FREE_SMALL_KEPT;
		break;
	case NPD_BUF_BULK:
		p->nbulk_lent--;
		list = &p->free_bulk, n = &p->nfree_bulk, keep = FREE_BULK_KEPT;
		break;
	default:
		free(b);
		return;
	}
	if (*n >= keep) {
		free(b);
		return;
	}
	b->next_free = *list;
	*list = b;
	(*n)++;
}

static void free_list(struct npd_buf **list, size_t *n)
{
	while (*list) {
		struct npd_buf *b = *list;
		*list = b->next_free;
		free(b);
	}
	*n = 0;
}

void npd_buf_pool_free(struct npd_buf_pool *p)
{
	free_list(&p->free_small, &p->nfree_small);
	free_list(&p->free_bulk, &p->nfree_bulk);
}
