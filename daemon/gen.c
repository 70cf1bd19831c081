/*
 * gen.c - config generations, shared by threads through a reference count.
 */
#include <stdlib.h>

#include "gen.h"

struct npd_gen *npd_gen_new(struct npd_config *cfg, unsigned number)
{
	struct npd_gen *g = malloc(sizeof(*g));

	if (!g)
		return NULL;
	g->cfg = cfg;
	atomic_init(&g->refs, 1);
	g->number = number;
	return g;
}

void npd_gen_hold(struct npd_gen *g)
{
	atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
}

void npd_gen_release(struct npd_gen *g)
{
	if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1) {
		npd_config_free(g->cfg);
		free(g);
	}
}
