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

/* An address and its length, 0 for none: a sockaddr_in6 holds AF_INET too. */
struct addr {
	struct sockaddr_in6 sa;
	socklen_t len;
};
_Static_assert(sizeof(struct addr) == 32, "an address is four words");

/* What a header named: its client and destination (client.len 0: neither). */
struct claim {
	struct addr client, dst;
};

/* An address in an entry: words that any thread may read while another writes. */
struct addr_slot {
	_Atomic uint64_t w[4];
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

/* What the shim knows of one descriptor: the kind in its entry's state word. */
enum fd_kind {
	FD_UNKNOWN = 0,
	FD_PLAIN,    /* a listener that is not on a PROXY port */
	FD_LISTENER, /* a listener on a PROXY port */
	FD_TAKEN,    /* a connection in the hands of the one call that has it */
	FD_PROXIED,  /* an accepted connection handed to the server */
	FD_PARKED,   /* accepted, header incomplete, watched */
	FD_READY,    /* header read, waiting for its listener's accept() */
};

/*
 * One entry per descriptor number, and who may touch what in it.
 *
 * state is the word any thread reads without the lock: the kind, the bits
 * below, and a generation that grows with every change of the word, so that
 * a reader can tell that the word it read still holds. Every change is
 * atomic; close(), dup2() and dup3() make theirs with compare-and-swap and
 * take no lock, so that a signal handler may call them. What else is in the
 * entry belongs, by kind, to:
 *
 *   FD_UNKNOWN   nobody: nothing else is meaningful.
 *   FD_PLAIN, FD_LISTENER
 *                whoever reads the word: cookie and mail are stored before
 *                the word (release) and read after it (acquire); ST_V6ONLY
 *                is in the word. Written under the lock.
 *   FD_TAKEN     the one call that took it: from the kernel (accept,
 *                recvmsg) or off the queue. It alone writes the entry, and
 *                only once the word says FD_TAKEN.
 *   FD_PROXIED   any thread, read-only: peer, client and dst were written
 *                before the word said so, in release stores, and are read
 *                as under a sequence lock: the word, the words of the
 *                addresses (acquire), the word again, and used only when it
 *                has not changed. A descriptor closed behind the shim's back
 *                and reused is told apart by its real peer.
 *   FD_PARKED, FD_READY
 *                the holder of the lock: the fd is on the queue, and flags,
 *                listener, lcookie, next, deadline_ms, wake_ms and the
 *                addresses are written and read under the lock only. Only the
 *                holder of the lock changes the kind to or from these; the
 *                wrappers of close() and dup() only add bits:
 *                  ST_BUSY    the watcher, holding the lock, is making system
 *                             calls on the fd: a close() asks it to close the
 *                             fd when done (ST_CLOSE) and returns; a dup2()
 *                             over it waits until it is done;
 *                  ST_CLOSE   see ST_BUSY;
 *                  ST_ORPHAN  the server closed or replaced the fd: the shim
 *                             makes no more system calls on it and takes it
 *                             off the queue at the next chance.
 *
 * A server that closes a descriptor it was never given (one the shim has
 * queued, or accepted but not yet returned) keeps the table sound, and the
 * descriptor closed; what then happens to that number is what happens to any
 * descriptor closed under another thread's feet.
 */
#define ST_KIND 0x07u
#define ST_V6ONLY 0x08u /* FD_LISTENER: an IPv6 socket with IPV6_V6ONLY */
#define ST_BUSY 0x10u
#define ST_CLOSE 0x20u
#define ST_ORPHAN 0x40u
#define ST_GEN 0x100u /* the generation's unit: 24 bits of it */

struct fd_entry {
	_Atomic uint32_t state;
	int flags;	  /* the SOCK_NONBLOCK and SOCK_CLOEXEC it has now */
	int listener;	  /* queued: the listening fd it is for */
	int next;	  /* queued: the next queued fd, or -1 */
	uint64_t lcookie; /* queued: that listener's cookie: another socket on its number is not it */
	int64_t deadline_ms;
	int64_t wake_ms;		 /* FD_READY: when to send the next wake-up */
	_Atomic uint64_t cookie;	 /* FD_LISTENER, FD_PLAIN: its SO_COOKIE */
	struct mail_count *_Atomic mail; /* FD_LISTENER: its mailbox's count, or NULL */
	struct addr_slot peer;		 /* the real peer, as accept() saw it: tells the socket apart */
	struct addr_slot client, dst;	 /* what the header named */
};
_Static_assert(sizeof(struct fd_entry) == 152, "the man page gives the entry's size");

static inline unsigned st_kind(uint32_t s)
{
	return s & ST_KIND;
}

static inline bool st_queued(uint32_t s)
{
	return st_kind(s) == FD_PARKED || st_kind(s) == FD_READY;
}

/* The next word after s: one generation on, with kind and bits (of kind_bits' low byte). */
static inline uint32_t st_next(uint32_t s, uint32_t kind_bits)
{
	return ((s & ~(ST_GEN - 1)) + ST_GEN) | (kind_bits & (ST_GEN - 1));
}

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
uint32_t state_of(struct fd_entry *e);
uint32_t state_set(struct fd_entry *e, uint32_t kind_bits);
bool state_change(struct fd_entry *e, uint32_t *from, uint32_t kind_bits);
void slot_put(struct addr_slot *slot, const struct addr *a);
void slot_get(struct addr_slot *slot, struct addr *a);
void entry_set_claim(struct fd_entry *e, const struct claim *c);
void entry_claim(struct fd_entry *e, struct claim *c);
void entry_take(int fd, struct fd_entry *e);
bool entry_publish(struct fd_entry *e, uint32_t kind);
bool proxied_claim(int fd, struct claim *c);
struct fd_entry *proxy_listener(int lfd, bool fresh, uint32_t *state);
bool listener_is(int lfd, uint64_t cookie);
void dequeue(int fd);
void enqueue(int fd);
void forget_queued(int fd);
int pop_ready(int lfd, uint64_t lcookie);

/* --- header.c ------------------------------------------------------------- */

/* What a wake-up connection says; no PROXY header starts like this. */
#define WAKE_MAGIC "NETPROXY-PRELOAD-WAKE\n"

bool header_init(void);
void header_before_fork(void);
void header_after_fork_parent(void);
void header_after_fork_child(void);
int try_header(int fd, struct claim *c, bool fin, bool watcher, const char **why);
int other_family(const struct claim *c, int sock_family, bool v6only);
void in_family(struct claim *c, int sock_family);

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
void mailboxes_sweep(bool ask_kernel);
void mailboxes_after_fork(void);
bool post(struct mailbox *m, int fd, struct fd_entry *e);
int take_mail(int lfd);
bool mail_waiting(const struct mailbox *m);
bool mail_waits(struct fd_entry *l);
int route(struct claim *c, int lfd, int sock_family, const char **why);
void say_routed(int fd, int to, const struct claim *c);

/* --- watcher.c ------------------------------------------------------------ */

/* What park() did with a connection. */
enum parked {
	PARKED,	    /* on the queue, watched */
	NOT_PARKED, /* the watcher cannot take it: the caller refuses it */
	GONE,	    /* the server closed it meanwhile: nothing is left to do */
};

bool start_watcher(void);
enum parked park(int fd, struct fd_entry *e, int lfd, uint64_t lcookie);
bool make_ready(int fd, struct fd_entry *e, int lfd);
void poke(void);
void ask_wake(int lfd);
void watcher_before_fork(void);
void watcher_after_fork_parent(void);
void watcher_after_fork_child(void);

#endif
