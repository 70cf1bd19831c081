/*
 * gen.h - a loaded config and its lifetime: held by main while current, by
 * each worker that runs it, and by each connection accepted under it, so a
 * reload leaves established connections their services.
 */
#ifndef NPD_GEN_H
#define NPD_GEN_H

#include <stdatomic.h>

#include "config.h"

struct npd_gen {
	struct npd_config *cfg;
	atomic_int refs;
	unsigned number; /* 1 at start, +1 per successful reload */
};

/* A generation holding cfg, with one reference (the caller's); NULL when out of memory. */
struct npd_gen *npd_gen_new(struct npd_config *cfg, unsigned number);
void npd_gen_hold(struct npd_gen *g);
/* Drop a reference; the last one frees the config. */
void npd_gen_release(struct npd_gen *g);

#endif /* NPD_GEN_H */
