/*
 * log.h - netproxyd's log: one line per event, to stderr (systemd's journal
 * adds nothing we would miss) or to syslog. Lines are written whole, with
 * writes of at most PIPE_BUF bytes, so threads never interleave within one.
 */
#ifndef NPD_LOG_H
#define NPD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum npd_log_level {
	NPD_LOG_ERROR = -1, /* always shown */
	NPD_LOG_WARN = 0,   /* always shown */
	NPD_LOG_INFO = 1,   /* connections, start, reload: the default */
	NPD_LOG_DEBUG = 2,
};

/* Set where lines go and which are shown (a level above `level` is dropped). */
void npd_log_setup(bool use_syslog, int level);

bool npd_log_enabled(int level);

__attribute__((format(printf, 2, 3))) void npd_log(int level, const char *fmt, ...);

/*
 * Batch the calling thread's lines to stderr: they are written when
 * npd_log_flush() is called, or when the batch is full (PIPE_BUF bytes, so
 * each write stays atomic). Turning it off flushes. Workers batch a loop
 * turn's lines; syslog lines are never batched.
 */
void npd_log_batch(bool on);
void npd_log_flush(void);

/*
 * Bytes from the wire, made safe to print: printable ASCII stays, everything
 * else (and backslash and double quote) becomes \xNN. Writes at most cap - 1
 * characters and a NUL; input that does not fit ends in "...". Returns out.
 */
char *npd_escape(char *out, size_t cap, const uint8_t *in, size_t len);

#endif /* NPD_LOG_H */
