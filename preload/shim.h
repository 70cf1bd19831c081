/*
 * shim.h - what the files of libnetproxy_preload.so share; nothing here is
 * exported (preload.map lists the eight calls that are).
 *
 * One job per file, each calling only the files below it:
 *
 *   preload.c   the exported calls: accept(), listen(), close(), ...
 *   watcher.c   the watcher thread: epoll, deadlines, wake-ups; parking; fork
 *   mailbox.c   mailboxes: late connections handed between processes
 *   header.c    reading a PROXY header without taking a byte more
 *   table.c     the descriptor table and the queue threaded through it
 *   env.c       the NETPROXY_* settings, libc's own calls, the clock, debug lines
 *
 * How the whole works is told at the top of preload.c.
 */
#ifndef NETPROXY_PRELOAD_SHIM_H
#define NETPROXY_PRELOAD_SHIM_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "netproxy.h"

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

#define EXPORT __attribute__((visibility("default")))
#define MAX_PORTS 64
#define MAX_TRUSTED 64
#define STACK_HEADER 4096 /* the default cap: headers up to this long are read on the stack */
#define TABLE_MAX (1u << 22) /* entries; a larger RLIMIT_NOFILE is capped */
#define WAKE_EVERY_MS 100 /* while a ready connection waits */
#define MAX_MAILBOXES 64

/* --- env.c ---------------------------------------------------------------- */

/* The settings, read once at the first call and never written after. */
struct shim_conf {
	bool active;
	bool debug, report_dst;
	int timeout_ms;
	size_t max_header; /* NETPROXY_MAX_HEADER */
	char too_big[64];  /* the reason a header longer than that is refused */
	uint16_t ports[MAX_PORTS];
	size_t nports;
	struct np_cidr trusted[MAX_TRUSTED];
	size_t ntrusted;
	bool anyone; /* NETPROXY_TRUSTED set and empty: every sender is trusted */
};
extern struct shim_conf conf;

/* The C library's own calls, the ones the shim wraps. */
struct shim_real {
	int (*accept)(int, struct sockaddr *, socklen_t *);
	int (*accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*getpeername)(int, struct sockaddr *, socklen_t *);
	int (*getsockname)(int, struct sockaddr *, socklen_t *);
	int (*close)(int);
	int (*listen)(int, int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
};
extern struct shim_real real;

void env_resolve(void);
bool env_read(void);
void env_announce(void);
__attribute__((format(printf, 1, 2))) void debug(const char *fmt, ...);
int64_t now_ms(void);
bool is_trusted(const struct sockaddr *sa);
bool is_proxy_port(uint16_t port);

/* --- table.c -------------------------------------------------------------- */

/* What the shim knows of one descriptor. */
enum fd_kind {
	FD_UNKNOWN = 0,
	FD_PLAIN,    /* a listener that is not on a PROXY port */
	FD_LISTENER, /* a listener on a PROXY port */
	FD_PROXIED,  /* an accepted connection handed to the server */
	FD_PARKED,   /* accepted, header incomplete, watched */
	FD_READY,    /* header read, waiting for its listener's accept() */
};

/*
 * How many connections a mailbox holds, in memory shared by every process
 * that has the mailbox (MAP_SHARED, inherited across fork()). It is a hint,
 * read without the lock: counted up before a connection is sent into the
 * mailbox and down after each one is received, it may say one waits for the
 * moment one is in flight, never that none waits while one is there.
 * Counters come from pages of SLAB_SLOTS, handed out by a shared index and
 * never reused or unmapped, so that no process can see a counter change
 * meaning and a stale pointer still points to a counter: 64 bytes per
 * mailbox ever made.
 */
struct mail_count {
	_Alignas(64) atomic_int waiting;
};

struct fd_entry {
	_Atomic uint64_t cookie; /* 0: unused; a listener's SO_COOKIE; IN_USE for the rest */
	uint8_t kind;
	bool has_client;  /* the header named the addresses; else the real ones apply */
	bool v6only;	  /* FD_LISTENER: an IPv6 socket with IPV6_V6ONLY */
	int flags;	  /* the SOCK_NONBLOCK and SOCK_CLOEXEC it has now */
	int listener;	  /* FD_PARKED, FD_READY: the listening fd it came from */
	int next;	  /* FD_PARKED, FD_READY: the next queued fd, or -1 */
	int64_t deadline_ms;
	union {
		int64_t wake_ms; /* FD_READY: when to send the next wake-up */
		struct mail_count *_Atomic mail; /* FD_LISTENER: its mailbox's count, or NULL */
	};
	struct sockaddr_in6 client, dst; /* big enough for AF_INET too */
	socklen_t client_len, dst_len;
	struct sockaddr_in6 peer; /* the real peer, as accept() saw it: tells the socket apart */
	socklen_t peer_len;
};

/*
 * The cookie of an accepted connection's entry only says "in use": such an
 * entry is recognised by its real peer instead, which getpeername() reads
 * anyway, so accept() need not pay a getsockopt() for it.
 */
#define IN_USE 1

extern struct fd_entry *table;
extern size_t table_size;

/* The queue of parked and ready fds, oldest first, through their entries' next. */
struct shim_queue {
	int head;
	atomic_int queued; /* how many: read without the lock by accept() */
};
extern struct shim_queue queue;
extern pthread_mutex_t shim_lock; /* the queue, the watcher's state, the mailboxes */

static inline struct fd_entry *entry(int fd)
{
	if (fd < 0 || (size_t)fd >= table_size)
		return NULL;
	return &table[fd];
}

bool table_init(void);
uint64_t cookie_of(int fd);
struct fd_entry *proxied_entry(int fd);
struct fd_entry *proxy_listener(int lfd);
void forget(struct fd_entry *e);
void dequeue(int fd);
void enqueue(int fd);
int pop_ready(int lfd);

/* --- header.c ------------------------------------------------------------- */

/* What a wake-up connection says; no PROXY header starts like this. */
#define WAKE_MAGIC "NETPROXY-PRELOAD-WAKE\n"

bool header_init(void);
void header_before_fork(void);
void header_after_fork_parent(void);
void header_after_fork_child(void);
int try_header(int fd, struct fd_entry *e, bool fin, const char **why);
int other_family(const struct fd_entry *e, int sock_family, bool v6only);
void in_family(struct fd_entry *e, int sock_family);

/* --- mailbox.c ------------------------------------------------------------ */

struct mailbox {
	int lfd;
	uint64_t cookie;  /* the listener's */
	int fds[2];	  /* a datagram socketpair: [0] to receive, [1] to send */
	int64_t woken_ms; /* the last wake-up sent for it by this process */
	bool wake_wanted; /* accept() asks the watcher for a wake-up */
	struct mail_count *count;
	int family; /* the listener's */
	uint16_t port;
};

struct mailbox *mailbox_of(int lfd);
size_t mailbox_count(void);
struct mailbox *mailbox_at(size_t i);
void mailbox_for_listener(int fd);
void mailboxes_after_fork(void);
void free_mailbox(struct mailbox *m);
bool post(int fd, struct fd_entry *e);
int take_mail(int lfd);
bool mail_waiting(const struct mailbox *m);
bool mail_waits(struct fd_entry *l);
int route(int fd, struct fd_entry *e, int lfd, int sock_family, const char **why);

/* --- watcher.c ------------------------------------------------------------ */

bool start_watcher(void);
bool park(int fd, struct fd_entry *e, int lfd, uint64_t cookie);
void make_ready(int fd, struct fd_entry *e, int lfd);
void drop_queued(int fd, const char *why);
void unwatch(int fd);
void poke(void);
void ask_wake(int lfd);
void watcher_before_fork(void);
void watcher_after_fork_parent(void);
void watcher_after_fork_child(void);

#endif
