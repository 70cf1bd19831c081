/*
 * test_prefix.c - np_parse() on every prefix of every vector, each input
 * ending right before a PROT_NONE guard page.
 *
 * A streaming receiver calls np_parse() again as bytes arrive, so every
 * prefix is an input it will see. For each vector the results of all its
 * prefixes (lengths 0 to len) must have the shape its outcome implies:
 *
 *   ok          NP_EAGAIN below header_len, then header_len from header_len
 *               on (the input cut at header_len is one of these prefixes)
 *   incomplete  NP_EAGAIN throughout
 *   error       NP_EAGAIN, then from some length on an error, never NP_EAGAIN
 *               or success again; and where the fixed bytes alone rule the
 *               input out (diverge_at, computed by gen_vectors.py from the
 *               "PROXY " prefix, the signature, version, command and family
 *               byte: checklist E.1), the first error is at exactly that length
 *
 * Every input is copied so that its last byte is the last byte before the
 * guard page: reading one byte past len faults, so the test crashes instead
 * of passing. A forked child checks first that the guard really faults.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "netproxy.h"
#include "tap.h"
#include "vectors.h"

static uint8_t *map_base;
static size_t map_size;
static uint8_t *guard; /* first byte of the PROT_NONE page */

/* The input being parsed, for the fault handler's last words. */
static const char *volatile cur_name;
static volatile size_t cur_len;

/* Enough read-write pages for the longest input, then the guard page. */
static void guard_setup(size_t max_len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t pages = (max_len + page - 1) / page + 1;

	map_size = (pages + 1) * page;
	map_base = mmap(NULL, map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map_base == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	guard = map_base + pages * page;
	if (mprotect(guard, page, PROT_NONE) != 0) {
		perror("mprotect");
		exit(2);
	}
}

/* Parse bytes[0..len) of the input called name, placed flush against the guard page. */
static int parse_at_guard(const char *name, const uint8_t *bytes, size_t len, struct np_header *hdr)
{
	uint8_t *at = guard - len;

	cur_name = name;
	cur_len = len;
	if (len)
		memcpy(at, bytes, len);
	return np_parse(at, len, hdr);
}

/*
 * Positive control: a read of the guard page must kill the reader, or none
 * of the over-read checks below means anything. The child's stderr goes to
 * /dev/null: under ASan the fault is reported there, which is expected.
 */
static void check_guard_faults(void)
{
	pid_t pid = fork();
	int status = 0;

	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		if (devnull >= 0)
			dup2(devnull, 2);
		volatile const uint8_t *p = guard;
		uint8_t b = p[0];
		_exit(b == 0xFF ? 3 : 0);
	}
	if (pid < 0) {
		ok(0, "guard page: fork failed");
		return;
	}
	waitpid(pid, &status, 0);
	if (!ok(!(WIFEXITED(status) && WEXITSTATUS(status) == 0),
		"guard page: reading it kills the reader"))
		diag("  the child read the guard page and exited normally");
}

static size_t put_str(char *w, const char *s)
{
	size_t n = 0;

	while (s[n]) {
		w[n] = s[n];
		n++;
	}
	return n;
}

static size_t put_num(char *w, size_t v)
{
	char digits[24];
	size_t n = 0, i;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		w[i] = digits[n - 1 - i];
	return n;
}

/*
 * An over-read lands here: say which input did it, as a TAP bail-out, with
 * nothing but write(2) (no stdio in a signal handler).
 */
static void on_fault(int sig)
{
	char msg[256], *w = msg;
	const char *name = cur_name ? cur_name : "?";

	w += put_str(w, "Bail out! ");
	w += put_str(w, sig == SIGBUS ? "SIGBUS" : "SIGSEGV");
	w += put_str(w, ", read past the input: ");
	if (strlen(name) < 160)
		w += put_str(w, name);
	w += put_str(w, ", prefix length ");
	w += put_num(w, cur_len);
	*w++ = '\n';
	if (write(1, msg, (size_t)(w - msg)) < 0)
		_exit(2);
	_exit(2);
}

static void catch_faults(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fault;
	sa.sa_flags = SA_RESETHAND;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
}

static const char *code_name(int r)
{
	return r > 0 ? "a length" : np_errname(r);
}

/* What a prefix of length n of v must give; 0 means "any error but NP_EAGAIN". */
static int want_for(const struct vec *v, size_t n, size_t first_err)
{
	switch (v->expect) {
	case 1:
		return n < v->header_len ? NP_EAGAIN : (int)v->header_len;
	case -1:
		return NP_EAGAIN;
	default:
		return n < first_err ? NP_EAGAIN : 0;
	}
}

static int matches(int got, int want)
{
	return want == 0 ? got < 0 && got != NP_EAGAIN : got == want;
}

/*
 * Once refused, a stream stays refused for the same reason: the code must not
 * depend on how many bytes had arrived (or on how the stream was segmented,
 * since a receiver that reads in pieces sees exactly these prefixes).
 */
static void check_same_error(const struct vec *v, size_t first_err)
{
	struct np_header h;
	int first = parse_at_guard(v->name, v->bytes, first_err, &h);

	for (size_t n = first_err + 1; n <= v->len; n++) {
		int r = parse_at_guard(v->name, v->bytes, n, &h);
		if (r != first) {
			ok(0, "%s: one error code for every refused prefix", v->name);
			diag("  length %zu gave %s, length %zu gave %s", first_err, code_name(first), n,
			     code_name(r));
			return;
		}
	}
	ok(1, "%s: one error code (%s) for every refused prefix", v->name, code_name(first));
}

/*
 * All prefixes of one vector, shortest first, against the shape its outcome
 * implies. For an error vector the shape is anchored at the parser's first
 * error, which must exist, and must be at diverge_at when the fixed bytes
 * already decide.
 */
static void check_vector(const struct vec *v)
{
	struct np_header h;
	size_t first_err = v->len + 1;
	long bad = -1;
	int got = 0, want = 0;

	for (size_t n = 0; n <= v->len; n++) {
		int r = parse_at_guard(v->name, v->bytes, n, &h);

		if (v->expect == 0 && first_err > v->len && r != NP_EAGAIN)
			first_err = n;
		want = want_for(v, n, first_err);
		if (!matches(r, want)) {
			bad = (long)n;
			got = r;
			break;
		}
	}
	if (bad < 0 && v->expect == 0) {
		if (first_err > v->len) {
			/* Waited through the whole input: never refused. */
			bad = (long)v->len;
			got = NP_EAGAIN;
			want = 0;
		} else if (v->diverge_at && first_err < v->diverge_at) {
			bad = (long)first_err;
			got = parse_at_guard(v->name, v->bytes, first_err, &h);
			want = NP_EAGAIN;
		} else if (v->diverge_at && first_err > v->diverge_at) {
			bad = (long)v->diverge_at;
			got = NP_EAGAIN;
			want = 0;
		}
	}
	if (!ok(bad < 0, "%s: all %zu prefixes", v->name, v->len + 1)) {
		diag("  first failing prefix length %ld of %zu: got %d (%s), want %s", bad, v->len, got,
		     code_name(got), want == 0 ? "an error" : code_name(want));
		if (v->diverge_at)
			diag("  the fixed bytes rule it out at length %zu", v->diverge_at);
	}
	if (v->expect == 0 && bad < 0)
		check_same_error(v, first_err);
}

/* An "eager" vector is rejected at the byte that decides, not when complete. */
static void check_eager(const struct vec *v)
{
	struct np_header h;
	size_t n = v->diverge_at;
	int before = parse_at_guard(v->name, v->bytes, n - 1, &h);
	int at = parse_at_guard(v->name, v->bytes, n, &h);

	if (!ok(before == NP_EAGAIN && at < 0 && at != NP_EAGAIN,
		"%s: eager, rejected at prefix length %zu", v->name, n))
		diag("  length %zu gave %s, length %zu gave %s", n - 1, code_name(before), n,
		     code_name(at));
}

/* Inputs written by hand: how soon each is refused, and with which code. */
static const struct hand_case {
	const char *what;
	const char *bytes;
	size_t len;
	size_t fail_at; /* first failing prefix length; 0: none, NP_EAGAIN throughout */
	int code;
} hand_cases[] = {
	{"\"GET /\" fails on its first byte", "GET /", 5, 1, NP_ENOTPROXY},
	{"NUL first byte", "\x00", 1, 1, NP_ENOTPROXY},
	{"lower-case \"proxy\"", "proxy ", 6, 1, NP_ENOTPROXY},
	{"\"PROXY\" then CR", "PROXY\r\n", 7, 6, NP_ENOTPROXY},
	{"signature diverging at QUIX", "\r\n\r\n\x00\r\nQUIX", 11, 11, NP_ENOTPROXY},
	{"v2 signature diverging at byte 3", "\r\n\n", 3, 3, NP_ENOTPROXY},
	{"v2 version 3", "\r\n\r\n\x00\r\nQUIT\n\x31", 13, 13, NP_EVERSION},
	{"v2 command 2", "\r\n\r\n\x00\r\nQUIT\n\x22", 13, 13, NP_ECOMMAND},
	{"v2 family 4", "\r\n\r\n\x00\r\nQUIT\n\x21\x41\x00\x0c", 16, 14, NP_EFAMILY},
	{"v2 transport 3", "\r\n\r\n\x00\r\nQUIT\n\x21\x13\x00\x0c", 16, 14, NP_ETRANSPORT},
	{"v2 PROXY with unlisted 0x10", "\r\n\r\n\x00\r\nQUIT\n\x21\x10\x00\x00", 16, 14, NP_EFAMILY},
	/*
	 * v1 lines: the code is the same at every length from the first refusal
	 * on, so a receiver reading in pieces reports what one reading it whole
	 * does (before, the first case was NP_ETOOLONG whole and NP_EFAMILY in
	 * pieces).
	 */
	{"v1 unknown protocol word, 128 bytes", "PROXY XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n", 128, 7, NP_EFAMILY},
	{"v1 TCP4 without addresses", "PROXY TCP4\r\n", 12, 11, NP_ELINE},
	{"v1 lone LF inside a TCP4 line", "PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n", 33, 19, NP_ELINE},
	{"v1 lone LF after UNKNOWN", "PROXY UNKNOWN x\ny\r\n", 19, 16, NP_ELINE},
	{"v1 CR not followed by LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", 32, 32, NP_ELINE},
	/* LOCAL ignores an unlisted family (checklist E.4): no early refusal. */
	{"v2 LOCAL with unlisted 0x10 waits", "\r\n\r\n\x00\r\nQUIT\n\x20\x10\x00\x05", 16, 0, 0},
};

static void check_hand_case(const struct hand_case *c)
{
	const uint8_t *bytes = (const uint8_t *)c->bytes;
	struct np_header h;

	for (size_t n = 0; n <= c->len; n++) {
		int r = parse_at_guard(c->what, bytes, n, &h);
		int want = c->fail_at && n >= c->fail_at ? c->code : NP_EAGAIN;

		if (r != want) {
			ok(0, "%s", c->what);
			diag("  prefix length %zu: got %d (%s), want %s", n, r, code_name(r),
			     code_name(want));
			return;
		}
	}
	ok(1, "%s", c->what);
}

int main(void)
{
	size_t max_len = 16;

	for (size_t i = 0; i < VEC_COUNT; i++)
		if (vectors[i].len > max_len)
			max_len = vectors[i].len;
	/* Line-buffered: if an over-read kills us, the points so far are out. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	guard_setup(max_len);
	check_guard_faults();
	catch_faults();

	for (size_t i = 0; i < VEC_COUNT; i++)
		check_vector(&vectors[i]);
	for (size_t i = 0; i < VEC_COUNT; i++)
		if (vectors[i].eager)
			check_eager(&vectors[i]);
	for (size_t i = 0; i < sizeof(hand_cases) / sizeof(hand_cases[0]); i++)
		check_hand_case(&hand_cases[i]);

	munmap(map_base, map_size);
	return done_testing();
}
