/*
 * client_cli.c - the load generator's command line and its run: read the
 * options, build the request, start the threads, decide between the
 * establishing and the measured phase, and print the report.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "client.h"
#include "report.h"
#include "wire.h"

/* "A" or "A-B" (IPv4, B not below A), or one IPv6 address, of the target's family. */
static int parse_pool(const char *s, struct addr_pool *p)
{
	char a[INET6_ADDRSTRLEN + 2], b[INET6_ADDRSTRLEN + 2];
	const char *dash = strchr(s, '-');
	struct in_addr a4, b4;
	size_t n = dash ? (size_t)(dash - s) : strlen(s);

	memset(p, 0, sizeof(*p));
	if (n == 0 || n >= sizeof(a) || (dash && strlen(dash + 1) >= sizeof(b)))
		return -1;
	memcpy(a, s, n);
	a[n] = '\0';
	snprintf(p->text, sizeof(p->text), "%s", s);
	if (inet_pton(AF_INET, a, &a4) == 1) {
		p->family = AF_INET;
		p->first = ntohl(a4.s_addr);
		p->count = 1;
		if (dash) {
			snprintf(b, sizeof(b), "%s", dash + 1);
			if (inet_pton(AF_INET, b, &b4) != 1 || ntohl(b4.s_addr) < p->first)
				return -1;
			p->count = ntohl(b4.s_addr) - p->first + 1;
		}
	} else {
		if (dash)
			return -1; /* IPv6 ranges are not supported: one address */
		size_t m = strlen(a);
		if (m >= 2 && a[0] == '[' && a[m - 1] == ']') {
			memmove(a, a + 1, m - 2);
			a[m - 2] = '\0';
		}
		if (inet_pton(AF_INET6, a, &p->addr6) != 1)
			return -1;
		p->family = AF_INET6;
		p->count = 1;
	}
	p->set = true;
	return 0;
}

static void client_usage(FILE *out)
{
	fputs("usage: " PROG " [-m MODE] [--header v1|v2|none] [-c N] [-t N] [-n N] [-d SECONDS]\n"
	      "                      [--request-size BYTES] [--response-size BYTES] [--echo]\n"
	      "                      [--rate N] [--bind ADDR[-ADDR]] [--claim-src ADDR[-ADDR]]\n"
	      "                      [-w SECONDS] [--max-errors N] [--verify] [-j] HOST PORT\n"
	      "       " PROG " serve [-l ADDR:PORT]... [-p ADDR:PORT]... [-t N] [-d SECONDS] [-j]\n"
	      "       " PROG " -h | --help | --version\n"
	      "\n"
	      "Load a PROXY protocol receiver (or the backend directly): open connections\n"
	      "to HOST PORT, send a PROXY header and requests, and report the rate, the\n"
	      "latency at p50, p99 and p99.9, the throughput and the errors. Every run ends\n"
	      "at the count (-n) or the time limit (-d), whichever comes first, and says\n"
	      "which. 'serve' runs the backend the requests are meant for (see serve --help).\n"
	      "\n"
	      "modes (-m):\n"
	      "  conn    a new connection per request: connect, header, request, response,\n"
	      "          the server's close; -n connections, -c in flight (default 32)\n"
	      "  kept    requests on -c kept connections (default 32), one outstanding on\n"
	      "          each; -n requests (the default mode)\n"
	      "  up      bulk upload on -c streams (default 1); -n bytes\n"
	      "  down    bulk download on -c streams (default 1); -n bytes\n"
	      "  idle    open -n connections (default 1000), -c at a time (default 100), each\n"
	      "          with its header and one round trip, then hold them for -d seconds or\n"
	      "          until SIGTERM or SIGINT; a line on standard error says when all are\n"
	      "          established\n"
	      "\n"
	      "options:\n"
	      "  -m, --mode MODE         conn, kept, up, down or idle\n"
	      "  --header VERSION        v1, v2 (the default) or none; the header claims the\n"
	      "                          connection's own endpoints\n"
	      "  -c, --concurrency N     connections in flight (see the modes)\n"
	      "  -t, --threads N         threads, each with its own share of the connections\n"
	      "                          (default 1)\n"
	      "  -n, --count N           stop after N operations (bytes for up and down);\n"
	      "                          k, M, G suffixes (KiB, MiB, GiB for bytes)\n"
	      "  -d, --duration SECONDS  stop after SECONDS (default 10); connections are\n"
	      "                          opened (kept, up, down, idle) within the same bound\n"
	      "                          before the measured part starts\n"
	      "  --request-size BYTES    bytes per request, its 16-byte head included\n"
	      "                          (default 64)\n"
	      "  --response-size BYTES   bytes per response (default 64)\n"
	      "  --echo                  ask for the request's body back instead\n"
	      "  --rate N                start N requests (conn: connections) per second in\n"
	      "                          all, evenly; latency counts from the planned start\n"
	      "  -b, --bind ADDR[-ADDR]  connect from these local addresses in turn (an IPv4\n"
	      "                          range, or one IPv6 address); the port is chosen at\n"
	      "                          connect time (IP_BIND_ADDRESS_NO_PORT)\n"
	      "  --claim-src ADDR[-ADDR] the source address the header claims instead of the\n"
	      "                          real one (the port stays the connection's own)\n"
	      "  -w, --timeout SECONDS   fail a connect, a response or a stalled stream after\n"
	      "                          SECONDS (default 5)\n"
	      "  --max-errors N          stop after N errors (default 1000)\n"
	      "  --verify                check downloaded bytes against the pattern\n"
	      "                          (responses are always checked)\n"
	      "  -j, --json              print one JSON object instead of text\n"
	      "  -h, --help              print this help and exit\n"
	      "  --version               print the version and exit\n"
	      "\n"
	      "exit status:\n"
	      "  0   the run ended without errors\n"
	      "  1   there were errors (the report counts them by kind), or the run could\n"
	      "      not start\n"
	      "  64  usage error\n",
	      out);
}

enum {
	OPT_HEADER = 256,
	OPT_REQUEST_SIZE,
	OPT_RESPONSE_SIZE,
	OPT_ECHO,
	OPT_RATE,
	OPT_CLAIM,
	OPT_MAX_ERRORS,
	OPT_VERIFY,
	OPT_VERSION,
};

/* Defaults that depend on the mode, and the options that cannot go together. */
static int check_client_options(bool count_set, bool conc_set, bool req_set, bool resp_set)
{
	static const uint64_t default_count[] = {1000000, 10000000, 64ULL << 30, 64ULL << 30, 1000};
	static const unsigned default_conc[] = {32, 32, 1, 1, 100};

	if (!count_set)
		opt.count = default_count[opt.mode];
	if (!conc_set)
		opt.concurrency = default_conc[opt.mode];
	if (opt.mode == MODE_IDLE && opt.count > MAX_CONNS)
		return usage_error("-n: idle holds at most 1000000 connections");
	if (opt.echo && resp_set)
		return usage_error("--echo answers with the request's body: no --response-size");
	if (opt.echo && opt.request_size == HEAD_LEN)
		return usage_error("--echo needs a body: --request-size above 16");
	if ((opt.echo || req_set || resp_set) && streaming())
		return usage_error("--request-size, --response-size and --echo are for conn, "
				   "kept and idle");
	if (opt.rate > 0 && opt.mode != MODE_CONN && opt.mode != MODE_KEPT)
		return usage_error("--rate is for conn and kept");
	if (opt.verify && opt.mode != MODE_DOWN)
		return usage_error("--verify is for down (responses are always checked)");
	unsigned units = opt.mode == MODE_IDLE ? (unsigned)opt.count : opt.concurrency;
	if (opt.threads > units)
		return usage_error("-t: more threads (%u) than connections (%s %u)", opt.threads,
				   opt.mode == MODE_IDLE ? "-n" : "-c", units);
	if (opt.bind.set && opt.bind.family != opt.target.ss_family)
		return usage_error("--bind: not of the target's address family: '%s'", opt.bind.text);
	if (opt.claim.set && opt.claim.family != opt.target.ss_family)
		return usage_error("--claim-src: not of the target's address family: '%s'", opt.claim.text);
	if (opt.claim.set && opt.header == 0)
		return usage_error("--claim-src needs a header (not --header none)");
	return EXIT_OK;
}

static int parse_client(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"mode", required_argument, NULL, 'm'},
		{"header", required_argument, NULL, OPT_HEADER},
		{"concurrency", required_argument, NULL, 'c'},
		{"threads", required_argument, NULL, 't'},
		{"count", required_argument, NULL, 'n'},
		{"duration", required_argument, NULL, 'd'},
		{"request-size", required_argument, NULL, OPT_REQUEST_SIZE},
		{"response-size", required_argument, NULL, OPT_RESPONSE_SIZE},
		{"echo", no_argument, NULL, OPT_ECHO},
		{"rate", required_argument, NULL, OPT_RATE},
		{"bind", required_argument, NULL, 'b'},
		{"claim-src", required_argument, NULL, OPT_CLAIM},
		{"timeout", required_argument, NULL, 'w'},
		{"max-errors", required_argument, NULL, OPT_MAX_ERRORS},
		{"verify", no_argument, NULL, OPT_VERIFY},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0},
	};
	bool conc_set = false, req_set = false, resp_set = false;
	const char *count_arg = NULL;
	uint64_t v;
	int c;

	opt.mode = MODE_KEPT;
	opt.header = 2;
	opt.threads = 1;
	opt.duration_ns = 10 * NS_PER_S;
	opt.timeout_ns = 5 * NS_PER_S;
	opt.request_size = 64;
	opt.response_size = 64;
	opt.max_errors = 1000;
	while ((c = getopt_long(argc, argv, "m:c:t:n:d:b:w:jh", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': {
			int found = -1;
			for (int i = 0; i < (int)(sizeof(mode_name) / sizeof(mode_name[0])); i++)
				if (strcmp(optarg, mode_name[i]) == 0)
					found = i;
			if (found < 0)
				return usage_error("-m: not conn, kept, up, down or idle: '%s'", optarg);
			opt.mode = (enum mode)found;
			break;
		}
		case OPT_HEADER:
			if (strcmp(optarg, "v1") == 0)
				opt.header = 1;
			else if (strcmp(optarg, "v2") == 0)
				opt.header = 2;
			else if (strcmp(optarg, "none") == 0)
				opt.header = 0;
			else
				return usage_error("--header: not v1, v2 or none: '%s'", optarg);
			break;
		case 'c':
			if (parse_number(optarg, false, 1, MAX_CONNS, &v) != 0)
				return usage_error("-c: not a number from 1 to 1000000: '%s'", optarg);
			opt.concurrency = (unsigned)v;
			conc_set = true;
			break;
		case 't':
			if (parse_number(optarg, false, 1, MAX_THREADS, &v) != 0)
				return usage_error("-t: not a number from 1 to 256: '%s'", optarg);
			opt.threads = (unsigned)v;
			break;
		case 'n': /* read once the mode is known: bytes or operations */
			count_arg = optarg;
			break;
		case OPT_REQUEST_SIZE:
		case OPT_RESPONSE_SIZE: {
			bool req = c == OPT_REQUEST_SIZE; /* a request holds at least its head */
			if (parse_number(optarg, true, req ? HEAD_LEN : 1, MAX_MESSAGE, &v) != 0)
				return usage_error("--%s-size: not a size from %s to 64 MiB: '%s'",
						   req ? "request" : "response",
						   req ? "16 bytes" : "1 byte", optarg);
			*(req ? &opt.request_size : &opt.response_size) = (uint32_t)v;
			*(req ? &req_set : &resp_set) = true;
			break;
		}
		case OPT_ECHO:
			opt.echo = true;
			break;
		case OPT_RATE: {
			char *end;
			errno = 0;
			opt.rate = strtod(optarg, &end);
			if (optarg[0] < '0' || optarg[0] > '9' || errno || *end || !(opt.rate > 0) ||
			    opt.rate > 1e9)
				return usage_error("--rate: not a number per second above 0: '%s'", optarg);
			break;
		}
		case 'b':
		case OPT_CLAIM:
			if (parse_pool(optarg, c == 'b' ? &opt.bind : &opt.claim) != 0)
				return usage_error("%s: not ADDR or FIRST-LAST (IPv4, ascending): '%s'",
						   c == 'b' ? "--bind" : "--claim-src", optarg);
			break;
		case 'd':
		case 'w':
			if (parse_seconds(optarg, c == 'd' ? &opt.duration_ns : &opt.timeout_ns) != 0)
				return usage_error("-%c: not a number of seconds above 0: '%s'", c, optarg);
			break;
		case OPT_MAX_ERRORS:
			if (parse_number(optarg, false, 1, UINT64_MAX / 2, &v) != 0)
				return usage_error("--max-errors: not a number of at least 1: '%s'", optarg);
			opt.max_errors = v;
			break;
		case OPT_VERIFY:
			opt.verify = true;
			break;
		case 'j':
			opt.json = true;
			break;
		case 'h':
			client_usage(stdout);
			return -1;
		case OPT_VERSION:
			puts(PROG " " NP_VERSION_STRING);
			return -1;
		default:
			return usage_error(NULL);
		}
	}
	if (count_arg && parse_number(count_arg, streaming(), 1, UINT64_MAX / 2, &opt.count) != 0)
		return usage_error("-n: not a %s of at least 1: '%s'",
				   streaming() ? "number of bytes" : "count", count_arg);
	if (argc - optind < 2)
		return usage_error("HOST and PORT are required");
	if (argc - optind > 2)
		return usage_error("unexpected argument: '%s'", argv[optind + 2]);

	struct addrinfo hints, *res;
	int e;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (parse_number(argv[optind + 1], false, 1, 65535, &v) != 0)
		return usage_error("PORT: not a number from 1 to 65535: '%s'", argv[optind + 1]);
	e = getaddrinfo(argv[optind], argv[optind + 1], &hints, &res);
	if (e != 0) {
		fprintf(stderr, PROG ": %s: %s\n", argv[optind],
			e == EAI_SYSTEM ? strerror(errno) : gai_strerror(e));
		return EXIT_FAIL;
	}
	memcpy(&opt.target, res->ai_addr, res->ai_addrlen);
	opt.target_len = res->ai_addrlen;
	freeaddrinfo(res);
	np_format_sockaddr(opt.target_text, sizeof(opt.target_text),
			   (const struct sockaddr *)&opt.target, opt.target_len);
	return check_client_options(count_arg != NULL, conc_set, req_set, resp_set);
}

int client_main(int argc, char **argv)
{
	int r = parse_client(argc, argv);
	if (r != EXIT_OK)
		return r < 0 ? EXIT_OK : r;

	uint64_t fds = (opt.mode == MODE_IDLE ? opt.count : opt.concurrency) + 16;
	if (raise_fd_limit(fds, opt.mode == MODE_IDLE ? "-n" : "-c") != 0)
		return EXIT_FAIL;
	pattern_init();
	request_keep = malloc(opt.request_size);
	request_close = malloc(opt.request_size);
	struct worker *ws = calloc(opt.threads, sizeof(*ws));
	if (!request_keep || !request_close || !ws) {
		fprintf(stderr, PROG ": out of memory\n");
		return EXIT_FAIL;
	}
	uint32_t body = opt.request_size - HEAD_LEN;
	int op = opt.echo ? OP_ECHO : OP_RESPOND;
	write_head(request_keep, op, body, (uint32_t)response_want(), 0);
	write_head(request_close, op, body, (uint32_t)response_want(), FLAG_CLOSE);
	memcpy(request_keep + HEAD_LEN, pattern, body < PATTERN_SPAN ? body : PATTERN_SPAN);
	for (uint32_t off = PATTERN_SPAN; off < body; off += PATTERN_SPAN)
		memcpy(request_keep + HEAD_LEN + off, pattern_at(off),
		       body - off < PATTERN_SPAN ? body - off : PATTERN_SPAN);
	memcpy(request_close + HEAD_LEN, request_keep + HEAD_LEN, body);

	catch_signals();

	if (setup_workers(ws) != 0)
		return EXIT_FAIL;
	bool establishes = opt.mode != MODE_CONN;
	if (establishes)
		pthread_barrier_init(&barrier, NULL, opt.threads + 1);
	for (unsigned i = 0; i < opt.threads; i++) {
		if ((r = pthread_create(&ws[i].thread, NULL, worker_main, &ws[i])) != 0) {
			fprintf(stderr, PROG ": pthread_create: %s\n", strerror(r));
			return EXIT_FAIL;
		}
	}

	bool measured = true;
	if (establishes) {
		pthread_barrier_wait(&barrier);
		unsigned est = 0, target = 0;
		bool late = false;
		int64_t took = 0;
		for (unsigned i = 0; i < opt.threads; i++) {
			est += ws[i].established;
			target += ws[i].target;
			late |= ws[i].hit_deadline;
			if (ws[i].establish_ns > took)
				took = ws[i].establish_ns;
		}
		if (got_signal || late || est == 0 || atomic_load(&errors_total) >= opt.max_errors) {
			atomic_store(&skip_measure, true);
			measured = false;
		}
		if (opt.mode == MODE_IDLE) {
			if (measured)
				fprintf(stderr,
					PROG ": idle: %u of %u connections established in %.3f s; "
					     "holding them for up to %.1f s (SIGTERM or SIGINT ends it)\n",
					est, target, (double)took / 1e9, (double)opt.duration_ns / 1e9);
			else
				fprintf(stderr, PROG ": idle: only %u of %u connections established\n",
					est, target);
			fflush(stderr);
		}
		pthread_barrier_wait(&barrier);
	}
	for (unsigned i = 0; i < opt.threads; i++)
		pthread_join(ws[i].thread, NULL);

	struct totals t;
	add_up(ws, opt.threads, &t);
	const char *reason = stop_reason(&t, measured);
	double elapsed = measured && t.t_end > t.t0 ? (double)(t.t_end - t.t0) / 1e9 : 0.0;
	if (opt.json)
		report_json(&t, reason, elapsed);
	else
		report_text(&t, reason, elapsed);
	fflush(stdout);
	return t.error_sum == 0 && measured ? EXIT_OK : EXIT_FAIL;
}
