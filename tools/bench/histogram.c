/*
 * histogram.c - the latency histogram (histogram.h): log-linear buckets,
 * fixed size, merged by adding.
 */
#include "histogram.h"

static unsigned hist_index(uint64_t v)
{
	if (v < 2 * HIST_SUB)
		return (unsigned)v;
	unsigned shift = 63 - (unsigned)__builtin_clzll(v) - HIST_SUB_BITS;
	return shift * HIST_SUB + (unsigned)(v >> shift);
}

/* The middle of bucket b's range. */
static uint64_t hist_value(unsigned b)
{
	if (b < 2 * HIST_SUB)
		return b;
	unsigned shift = b / HIST_SUB - 1;
	uint64_t low = (uint64_t)(b - shift * HIST_SUB) << shift;
	return low + ((1ULL << shift) >> 1);
}

void hist_add(struct histogram *h, uint64_t v)
{
	if (h->count == 0 || v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->count++;
	h->sum += v;
	h->bucket[hist_index(v)]++;
}

void hist_merge(struct histogram *into, const struct histogram *h)
{
	if (h->count == 0)
		return;
	if (into->count == 0 || h->min < into->min)
		into->min = h->min;
	if (h->max > into->max)
		into->max = h->max;
	into->count += h->count;
	into->sum += h->sum;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		into->bucket[i] += h->bucket[i];
}

/* The value at per_mille/1000 of the samples (999 for p99.9), within [min, max]. */
uint64_t hist_percentile(const struct histogram *h, unsigned per_mille)
{
	uint64_t rank = (h->count * per_mille + 999) / 1000, seen = 0;

	if (rank == 0)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank) {
			uint64_t v = hist_value(i);
			return v < h->min ? h->min : v > h->max ? h->max : v;
		}
	}
	return h->max;
}
