/*
 * tap.h - the Test Anything Protocol for the unit tests, read by prove(1).
 *
 *   plan(n) or nothing (the plan is printed at the end)
 *   ok(cond, "name %d", i);            one test point
 *   is_int(got, want, "name");         with both values shown on failure
 *   diag("...");                       a comment line
 *   return done_testing();             prints a lazy plan; the exit status
 *
 * Header-only on purpose: each test is one program from one .c file.
 */
#ifndef NP_TAP_H
#define NP_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_run, tap_failed, tap_planned = -1;

static inline void plan(int n)
{
	tap_planned = n;
	printf("1..%d\n", n);
}

static inline void skip_all(const char *why)
{
	printf("1..0 # SKIP %s\n", why);
	fflush(stdout);
	exit(0);
}

__attribute__((format(printf, 2, 3))) static inline int ok(int cond, const char *fmt, ...)
{
	va_list ap;

	tap_run++;
	if (!cond)
		tap_failed++;
	printf("%sok %d - ", cond ? "" : "not ", tap_run);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	return cond;
}

__attribute__((format(printf, 1, 2))) static inline void diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* One skipped test point. */
__attribute__((format(printf, 1, 2))) static inline void skip(const char *fmt, ...)
{
	va_list ap;

	tap_run++;
	printf("ok %d # SKIP ", tap_run);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

#define is_int(got, want, ...)                                                          \
	do {                                                                            \
		long long tap_g_ = (long long)(got), tap_w_ = (long long)(want);        \
		if (!ok(tap_g_ == tap_w_, __VA_ARGS__))                                 \
			diag("  got %lld, want %lld", tap_g_, tap_w_);                   \
	} while (0)

#define is_mem(got, want, n, ...)                                                       \
	do {                                                                            \
		if (!ok(memcmp((got), (want), (n)) == 0, __VA_ARGS__))                  \
			diag("  %zu bytes differ", (size_t)(n));                         \
	} while (0)

static inline int done_testing(void)
{
	if (tap_planned < 0)
		printf("1..%d\n", tap_run);
	else if (tap_planned != tap_run)
		printf("# planned %d tests but ran %d\n", tap_planned, tap_run);
	fflush(stdout);
	return tap_failed || (tap_planned >= 0 && tap_planned != tap_run) ? 1 : 0;
}

#endif /* NP_TAP_H */
