/*
 * serve.h - netproxy-bench's backend: answers the load generator's
 * requests (wire.h), after a PROXY header on the listeners that want one.
 */
#ifndef NETPROXY_BENCH_SERVE_H
#define NETPROXY_BENCH_SERVE_H

/* netproxy-bench serve [options]: runs until a signal or -d; the exit status. */
int serve_cmd(int argc, char **argv);

#endif
