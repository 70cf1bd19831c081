/*
 * log.c - lines to stderr with a UTC timestamp and the level, or to syslog.
 *
 * A worker logs a line per connection, and a write(2) per line would cost
 * a system call per connection: a thread that batches keeps its lines in a
 * buffer of PIPE_BUF bytes and writes them at the end of its loop turn, or
 * sooner when the next line would not fit. A write of at most PIPE_BUF bytes
 * to a pipe is atomic, so lines of different threads still never mix, on a
 * terminal, in a file or through systemd's pipe to the journal.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <stdatomic.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/*
 * Set by the main thread at start and on reloads, read by every worker for
 * each line: atomics, relaxed, since a line logged under the old level during
 * a reload is harmless, but a torn or cached read is undefined behaviour.
 */
static atomic_bool log_to_syslog;
static atomic_int log_level = NPD_LOG_INFO;

/* This thread's lines not written yet, when it batches. */
static _Thread_local struct {
	bool on;
	size_t len;
	char data[PIPE_BUF];
} batch;

void npd_log_setup(bool use_syslog, int level)
{
	if (use_syslog && !atomic_load_explicit(&log_to_syslog, memory_order_relaxed))
		openlog("netproxyd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	atomic_store_explicit(&log_to_syslog, use_syslog, memory_order_relaxed);
	atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

bool npd_log_enabled(int level)
{
	return level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

static const char *level_name(int level)
{
	switch (level) {
	case NPD_LOG_ERROR:
		return "error";
	case NPD_LOG_WARN:
		return "warning";
	case NPD_LOG_INFO:
		return "info";
	default:
		return "debug";
	}
}

static int syslog_priority(int level)
{
	switch (level) {
	case NPD_LOG_ERROR:
		return LOG_ERR;
	case NPD_LOG_WARN:
		return LOG_WARNING;
	case NPD_LOG_INFO:
		return LOG_INFO;
	default:
		return LOG_DEBUG;
	}
}

void npd_log(int level, const char *fmt, ...)
{
	char line[2048];
	size_t n = 0;
	va_list ap;

	if (!npd_log_enabled(level))
		return;
	if (!atomic_load_explicit(&log_to_syslog, memory_order_relaxed)) {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s: ",
				      ts.tv_nsec / 1000000, level_name(level));
	}
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += (size_t)m;
	if (n >= sizeof(line) - 1) {
		n = sizeof(line) - 5;
		memcpy(line + n, "...", 3);
		n += 3;
	}
	if (atomic_load_explicit(&log_to_syslog, memory_order_relaxed)) {
		line[n] = '\0';
		syslog(syslog_priority(level), "%s", line);
		return;
	}
	line[n++] = '\n';
	if (batch.on) {
		_Static_assert(sizeof(line) <= sizeof(batch.data), "a line fits in an empty batch");
		if (batch.len + n > sizeof(batch.data))
			npd_log_flush();
		memcpy(batch.data + batch.len, line, n);
		batch.len += n;
		return;
	}
	/* One write: a line from another thread can come before or after, never inside. */
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

void npd_log_batch(bool on)
{
	if (!on)
		npd_log_flush();
	batch.on = on;
}

void npd_log_flush(void)
{
	if (batch.len) {
		ssize_t w = write(STDERR_FILENO, batch.data, batch.len);
		(void)w;
		batch.len = 0;
	}
}

char *npd_escape(char *out, size_t cap, const uint8_t *in, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t w = 0;

	if (cap == 0)
		return out;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = in[i];
		int plain = c >= 0x20 && c < 0x7f && c != '\\' && c != '"';
		size_t need = plain ? 1 : 4;

		if (w + need + 4 > cap) { /* room for "..." and the NUL */
			memcpy(out + w, "...", 3);
			w += 3;
			break;
		}
		if (plain) {
			out[w++] = (char)c;
		} else {
			out[w++] = '\\';
			out[w++] = 'x';
			out[w++] = hex[c >> 4];
			out[w++] = hex[c & 15];
		}
	}
	out[w] = '\0';
	return out;
}
