/*
 * errors.h - what went wrong, by kind, on either side of a benchmark.
 */
#ifndef NETPROXY_BENCH_ERRORS_H
#define NETPROXY_BENCH_ERRORS_H

#include <stdint.h>

/*
 * Errors, by kind, for both sides: which counts a kind is its second field
 * (CLIENT, SERVER or BOTH), so each report lists only its own.
 */
enum { CLIENT = 1, SERVER = 2, BOTH = 3 };
#define ERROR_KINDS(X)                                                                  \
	X(REFUSED, CLIENT, "refused", "connection refused")                             \
	X(RESET, BOTH, "reset", "connection reset or broken")                           \
	X(TIMEOUT, CLIENT, "timeout", "no progress within the timeout")                 \
	X(SHORT, BOTH, "short", "closed in the middle of a request or response")        \
	X(CLOSED, CLIENT, "closed", "closed by the peer while idle")                    \
	X(UNEXPECTED, CLIENT, "unexpected", "bytes not asked for, or not as sent")      \
	X(BAD_HEADER, SERVER, "bad_header", "no valid PROXY header first")              \
	X(BAD_REQUEST, SERVER, "bad_request", "a request head that is not one")         \
	X(NO_PORT, CLIENT, "no_port", "no free local address or port")                  \
	X(NO_FD, BOTH, "no_fd", "out of file descriptors")                              \
	X(OTHER, BOTH, "other", "another system error")

enum error_kind {
#define ERROR_ENUM_(name, side, key, text) ERR_##name,
	ERROR_KINDS(ERROR_ENUM_)
#undef ERROR_ENUM_
	ERR_COUNT
};

struct error_kind_info {
	int side;	       /* CLIENT, SERVER or BOTH */
	const char *key, *text; /* the JSON key; the words of the text report */
};
extern const struct error_kind_info error_kinds[ERR_COUNT];

/* The error counts of one side as JSON members: "total":N,"refused":N,... */
void print_error_json(const uint64_t *errors, int side);

/* The kind of a failed system call's errno. */
enum error_kind errno_kind(int err);

#endif
