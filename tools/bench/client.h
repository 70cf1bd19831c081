/*
 * client.h - the load generator: its options, its threads (struct worker)
 * and what the command line (client_cli.c) and the report (report.c) read
 * of them. The engine itself, connections and their states, is client.c.
 */
#ifndef NETPROXY_BENCH_CLIENT_H
#define NETPROXY_BENCH_CLIENT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "netproxy.h"
#include "errors.h"
#include "histogram.h"

enum mode { MODE_CONN, MODE_KEPT, MODE_UP, MODE_DOWN, MODE_IDLE };
/* The modes' names on the command line and in the reports. */
extern const char *const mode_name[MODE_IDLE + 1];

/* A range of IPv4 addresses, or one IPv6 address. */
struct addr_pool {
	bool set;
	int family;
	uint32_t first; /* IPv4, host order */
	uint32_t count;
	struct in6_addr addr6;
	char text[2 * INET6_ADDRSTRLEN + 2];
};

struct client_options {
	enum mode mode;
	int header; /* 0 none, 1 or 2 */
	unsigned concurrency, threads;
	uint64_t count;
	int64_t duration_ns, timeout_ns;
	uint32_t request_size, response_size;
	bool echo, verify, json;
	double rate; /* per second, all threads; 0: as fast as possible */
	uint64_t max_errors;
	struct addr_pool bind, claim;
	struct sockaddr_storage target;
	socklen_t target_len;
	char target_text[NP_SOCKADDRSTRLEN];
};

/* The options of the run, set by the command line before any thread starts. */
extern struct client_options opt;

struct cconn; /* one connection slot, client.c's own */

enum phase { PHASE_ESTABLISH, PHASE_MEASURE };

struct worker {
	unsigned id;
	pthread_t thread;
	int epfd;
	enum phase phase;
	struct cconn *conns;
	unsigned nconns;   /* slots */
	unsigned target;   /* establish: connections to open in all */
	unsigned parallel; /* establish: at most this many opening at once */
	unsigned opened;   /* establish: attempts made */
	unsigned opening;  /* establish: connecting or in the warm-up round trip */
	unsigned active;   /* slots with a socket */
	unsigned busy;	   /* measured operations in progress */
	unsigned established;
	struct cconn **idle; /* conn: free slots; kept: connections waiting for a request */
	unsigned nidle;
	bool stopped;	     /* the deadline, a signal or the error limit was reached */
	bool stop_issuing;   /* no new operation is started */
	bool hit_deadline;
	int64_t now, t0, t_end, deadline, last_done, next_due, interval, establish_ns;
	uint64_t completed, in_flight_at_stop, bytes_sent, bytes_received, stream_bytes;
	uint64_t errors[ERR_COUNT];
	int first_other; /* errno of the first ERR_OTHER */
	struct histogram hist;
	uint8_t *rbuf;
};

/* Shared by the threads and main; see client.c. */
extern _Atomic bool budget_spent;     /* -n is used up */
extern _Atomic uint64_t errors_total; /* against --max-errors */
extern _Atomic bool skip_measure;     /* set by main between the barriers */
extern pthread_barrier_t barrier;     /* main and the threads, around establishing */
extern uint8_t *request_keep, *request_close; /* the request, without and with FLAG_CLOSE */

/* up or down: streams, not requests. */
bool streaming(void);

/* Bytes of response each request expects. */
uint64_t response_want(void);

/* Give each of the opt.threads workers its share of the connections; 0 or -1 after saying why. */
int setup_workers(struct worker *ws);

/* A worker thread: establish (but in conn), wait for main at the barriers, measure. */
void *worker_main(void *arg);

/* The load generator's main (client_cli.c): parse, run, report; the exit status. */
int client_main(int argc, char **argv);

#endif
