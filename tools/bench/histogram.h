/*
 * histogram.h - latency samples in nanoseconds, for percentiles.
 */
#ifndef NETPROXY_BENCH_HISTOGRAM_H
#define NETPROXY_BENCH_HISTOGRAM_H

#include <stdint.h>

/*
 * Log-linear buckets over nanoseconds: exact below 256 ns, then 128 buckets
 * per power of two, so a percentile is off by less than 0.8% (HdrHistogram's
 * layout). Fixed size, no allocation, merged by adding.
 */
#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct histogram {
	uint64_t count, sum, min, max;
	uint64_t bucket[HIST_BUCKETS];
};

/* Count one sample of v nanoseconds. */
void hist_add(struct histogram *h, uint64_t v);

/* Add h's samples to into's. */
void hist_merge(struct histogram *into, const struct histogram *h);

/* The value at per_mille/1000 of the samples (999 for p99.9), within [min, max]. */
uint64_t hist_percentile(const struct histogram *h, unsigned per_mille);

#endif
