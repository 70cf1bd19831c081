/*
 * mailbox.c - mailboxes: a connection whose header came late, handed from
 * the process that read it to whichever process sharing its listener accepts
 * next. A mailbox is a datagram socketpair made at listen() and inherited by
 * the children; a connection travels through it (SCM_RIGHTS) with the
 * addresses its header named, and a counter in memory the processes share
 * says how many wait. The mailboxes are also this process's register of its
 * listeners, which routes a client to the listener of its family. It uses
 * header.c, table.c and env.c; its state is under the shim's lock.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shim.h"

#define SLAB_SLOTS 63
struct mail_slab {
	_Alignas(64) atomic_uint used;
	struct mail_count slot[SLAB_SLOTS];
};
_Static_assert(sizeof(struct mail_slab) <= 4096, "a slab fits in a page");

static struct mailbox mailboxes[MAX_MAILBOXES];
static size_t nmailboxes;
static struct mail_slab *slab; /* where the next counter comes from */

/* What travels with a descriptor through a mailbox. */
struct mail {
	int64_t deadline_ms; /* CLOCK_MONOTONIC is the same clock in every process */
	struct claim claim;
};

/* lfd's mailbox, if it is still the listener it was made for. Lock held. */
struct mailbox *mailbox_of(int lfd)
{
	struct fd_entry *l = entry(lfd);

	if (!l || st_kind(state_of(l)) != FD_LISTENER)
		return NULL;
	uint64_t cookie = atomic_load_explicit(&l->cookie, memory_order_relaxed);
	for (size_t i = 0; i < nmailboxes; i++)
		if (mailboxes[i].lfd == lfd && mailboxes[i].cookie == cookie)
			return &mailboxes[i];
	return NULL;
}

/* How many mailboxes this process has, and the i-th. Lock held. */
size_t mailbox_count(void)
{
	return nmailboxes;
}

struct mailbox *mailbox_at(size_t i)
{
	return &mailboxes[i];
}

/*
 * Send fd with its mail into a mailbox, counted. The descriptor in flight is
 * a copy: fd stays open.
 */
static bool send_mail(const struct mailbox *m, const struct mail *mail, int fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = {.iov_base = (void *)mail, .iov_len = sizeof(*mail)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = sizeof(ctl.buf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	/* Counted first: a reader must never find mail that the count does not show. */
	atomic_fetch_add_explicit(&m->count->waiting, 1, memory_order_release);
	if (sendmsg(m->fds[1], &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof(*mail))
		return true;
	atomic_fetch_sub_explicit(&m->count->waiting, 1, memory_order_relaxed);
	return false;
}

/*
 * Post a ready connection into mailbox m, with its deadline and addresses;
 * true when it went, and the caller closes fd: the copy in flight lives on.
 * Lock held.
 */
bool post(struct mailbox *m, int fd, struct fd_entry *e)
{
	struct mail mail = {.deadline_ms = e->deadline_ms};

	entry_claim(e, &mail.claim);
	return send_mail(m, &mail, fd);
}

/*
 * The next connection in a mailbox, or -1 when there is none. One whose
 * deadline has passed is closed, and the next one looked at.
 */
static int receive_mail(const struct mailbox *m, struct mail *mail)
{
	for (;;) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(int))];
		} ctl;
		struct iovec iov = {.iov_base = mail, .iov_len = sizeof(*mail)};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
				     .msg_controllen = sizeof(ctl.buf)};
		ssize_t n = recvmsg(m->fds[0], &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0)
			return -1;
		atomic_fetch_sub_explicit(&m->count->waiting, 1, memory_order_relaxed);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		if (n != (ssize_t)sizeof(*mail) || !c || c->cmsg_type != SCM_RIGHTS ||
		    (msg.msg_flags & MSG_CTRUNC)) {
			debug("a mailbox message came without its connection (descriptor limit?)");
			continue;
		}
		int fd;
		memcpy(&fd, CMSG_DATA(c), sizeof(int));
		if (mail->deadline_ms > now_ms())
			return fd;
		debug("fd %d closed: the server did not accept it in time", fd);
		real.close(fd);
	}
}

/* A connection from lfd's mailbox, its entry set up and FD_TAKEN, or -1. */
int take_mail(int lfd)
{
	pthread_mutex_lock(&shim_lock);
	struct mailbox *m = mailbox_of(lfd);
	struct mail mail;
	int fd = m ? receive_mail(m, &mail) : -1;
	pthread_mutex_unlock(&shim_lock);
	if (fd < 0)
		return -1;

	struct fd_entry *e = entry(fd);
	struct addr peer = {.len = sizeof(peer.sa)};
	if (!e || real.getpeername(fd, (struct sockaddr *)&peer.sa, &peer.len) != 0) {
		debug("fd %d from the mailbox closed: %s", fd,
		      e ? "its peer is gone" : "beyond the shim's descriptor table");
		real.close(fd);
		return -1;
	}
	entry_take(fd, e);
	slot_put(&e->peer, &peer);
	entry_set_claim(e, &mail.claim);
	int fl = fcntl(fd, F_GETFL);
	e->flags = SOCK_CLOEXEC | (fl >= 0 && (fl & O_NONBLOCK) ? SOCK_NONBLOCK : 0);
	debug("fd %d: taken from the mailbox of fd %d", fd, lfd);
	return fd;
}

/*
 * Whether a mailbox holds a connection nobody took yet. Peeking without a
 * control buffer installs no descriptor; an expired one is taken and closed.
 */
bool mail_waiting(const struct mailbox *m)
{
	struct mail peek;

	if (recv(m->fds[0], &peek, sizeof(peek), MSG_PEEK | MSG_DONTWAIT) != (ssize_t)sizeof(peek))
		return false;
	if (peek.deadline_ms > now_ms())
		return true;
	struct mail mail;
	int fd = receive_mail(m, &mail); /* closes the expired ones */
	if (fd >= 0) {
		/* A live one was behind it: back it goes, for an accept() to take. */
		bool back = send_mail(m, &mail, fd);
		real.close(fd);
		return back;
	}
	return false;
}

/* Whether listener l's mailbox may hold a connection: no system call. */
bool mail_waits(struct fd_entry *l)
{
	struct mail_count *c = atomic_load_explicit(&l->mail, memory_order_relaxed);

	return c && atomic_load_explicit(&c->waiting, memory_order_acquire) > 0;
}

/* A mailbox's counter, from the shared slab, or NULL when none can be mapped. Lock held. */
static struct mail_count *new_count(void)
{
	unsigned i = slab ? atomic_fetch_add(&slab->used, 1) : SLAB_SLOTS;

	if (i >= SLAB_SLOTS) {
		/* Full, perhaps by other processes sharing it: a new one, for this process's children. */
		void *p = mmap(NULL, sizeof(struct mail_slab), PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
		slab = p;
		i = atomic_fetch_add(&slab->used, 1);
	}
	return &slab->slot[i];
}

/* Let go of a mailbox of this process. Lock held. */
static void free_mailbox(struct mailbox *m)
{
	struct fd_entry *le = entry(m->lfd);
	struct mail_count *count = m->count;

	if (le)
		atomic_compare_exchange_strong_explicit(&le->mail, &count, NULL, memory_order_relaxed,
							memory_order_relaxed);
	real.close(m->fds[0]);
	real.close(m->fds[1]);
	*m = mailboxes[--nmailboxes];
}

/*
 * Let go of the mailboxes of listeners that are gone: closed or replaced
 * through the shim, which only says so in their entries (close() takes no
 * lock), or, with ask_kernel, behind its back (close_range(), a raw system
 * call), which only the socket's cookie tells. Lock held.
 */
void mailboxes_sweep(bool ask_kernel)
{
	for (size_t i = 0; i < nmailboxes;) {
		struct mailbox *old = &mailboxes[i];
		if (listener_is(old->lfd, old->cookie) &&
		    (!ask_kernel || old->cookie == cookie_of(old->lfd))) {
			i++;
			continue;
		}
		free_mailbox(old);
	}
}

/*
 * fd was just made to listen on a PROXY port: it gets a mailbox, when it has
 * none and one can be made; first, mailboxes of listeners that are gone go.
 */
void mailbox_for_listener(int fd)
{
	pthread_mutex_lock(&shim_lock);
	mailboxes_sweep(true);
	struct mailbox *m = mailbox_of(fd);
	if (!m && nmailboxes < MAX_MAILBOXES) {
		struct mail_count *count = new_count();
		m = &mailboxes[nmailboxes];
		if (count && socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, m->fds) == 0) {
			m->lfd = fd;
			m->cookie = atomic_load_explicit(&entry(fd)->cookie, memory_order_relaxed);
			m->woken_ms = 0;
			m->wake_wanted = false;
			m->count = count;
			m->family = AF_UNSPEC;
			m->port = 0;
			struct sockaddr_storage ss;
			socklen_t len = sizeof(ss);
			if (real.getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
				m->family = ss.ss_family;
				if (ss.ss_family == AF_INET)
					m->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
				else if (ss.ss_family == AF_INET6)
					m->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
			}
			nmailboxes++;
		} else {
			m = NULL;
		}
	}
	if (m)
		atomic_store_explicit(&entry(fd)->mail, m->count, memory_order_relaxed);
	pthread_mutex_unlock(&shim_lock);
}

/* After fork(), in the child: no wake-up is owed by this process. */
void mailboxes_after_fork(void)
{
	for (size_t i = 0; i < nmailboxes; i++)
		mailboxes[i].wake_wanted = false;
}

/*
 * This process's listener of family fam on lfd's port, made to listen through
 * the shim (it has a mailbox, which is how it is found), or -1. Lock held.
 */
static int sibling(int lfd, int fam)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (real.getsockname(lfd, (struct sockaddr *)&ss, &len) != 0 ||
	    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
		return -1;
	uint16_t port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						      : ((struct sockaddr_in6 *)&ss)->sin6_port);
	for (size_t i = 0; i < nmailboxes; i++) {
		struct mailbox *m = &mailboxes[i];
		if (m->lfd != lfd && m->family == fam && m->port == port && mailbox_of(m->lfd) == m)
			return m->lfd;
	}
	return -1;
}

/*
 * Which listener a connection read on lfd, a socket of sock_family, is for:
 * lfd itself, or, for a client of a family lfd cannot report, this process's
 * listener of the client's family on the same port, as the kernel would have
 * chosen had the client connected itself; c's addresses are set as that
 * listener reports them. -1, *why set, when no listener can report it: an
 * IPv6 client and no IPv6 listener. (An IPv4 client on an IPv6-only listener
 * with no IPv4 one beside it is reported v4-mapped there.) Lock held.
 */
int route(struct claim *c, int lfd, int sock_family, const char **why)
{
	struct fd_entry *l = entry(lfd);
	int fam = other_family(c, sock_family, l && (state_of(l) & ST_V6ONLY));

	if (fam) {
		int to = sibling(lfd, fam);
		if (to >= 0)
			return to;
		if (fam == AF_INET6) {
			/* The server expects an IPv4 address from an IPv4 socket, a sockaddr_in. */
			*why = "an IPv6 client cannot be reported on an IPv4 listener";
			return -1;
		}
	}
	in_family(c, sock_family);
	return lfd;
}

/* The debug line for a connection route() gave to the listener to, of its client's family. */
void say_routed(int fd, int to, const struct claim *c)
{
	char v = c->client.sa.sin6_family == AF_INET6 ? '6' : '4';

	debug("fd %d: an IPv%c client, for fd %d, the IPv%c listener of its port", fd, v, to, v);
}
