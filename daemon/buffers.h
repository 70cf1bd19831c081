/*
 * buffers.h - the buffers a worker lends its connections, and the pool that
 * owns them.
 *
 * A buffer says which pool's it is (its kind), so giving it back never has
 * to guess from its size. Small buffers (NPD_BUF_SIZE) hold a message or a
 * header; bulk ones (NPD_BULK_SIZE) a stream's next megabyte; an oversize
 * one holds a header larger than a small buffer and belongs to no pool.
 */
#ifndef NPD_BUFFERS_H
#define NPD_BUFFERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NPD_BUF_SIZE 16384
/*
 * Room kept free behind the bytes read with the header: the re-emitted header
 * may be longer than the received one (v1 "TCP6 ::1 ::1 0 0" becomes 52
 * bytes of v2, plus 7 for a CRC32C), and it goes out in front of them.
 */
#define NPD_BUF_HEADROOM 64

/*
 * A direction whose read fills a whole buffer is moving bulk data: its next
 * reads take a buffer of NPD_BULK_SIZE, a system call per megabyte instead
 * of one per 16 KiB. Measured on loopback (bench/RESULTS.md), copying through
 * it costs netproxyd no more CPU per GiB than splice() through a pipe did,
 * and the chain runs faster: the peers' sockets get large segments. A pool
 * lends at most NPD_BULK_MAX of them at a time; beyond that a bulk direction
 * makes do with NPD_BUF_SIZE, so memory stays bounded however many stream.
 */
#define NPD_BULK_SIZE (1024 * 1024)
#define NPD_BULK_MAX 32

enum npd_buf_kind {
	NPD_BUF_SMALL,	  /* NPD_BUF_SIZE, from and back to the pool's small list */
	NPD_BUF_BULK,	  /* NPD_BULK_SIZE, counted while lent */
	NPD_BUF_OVERSIZE, /* any other size, for a large header; freed when given back */
};

struct npd_buf {
	struct npd_buf *next_free;
	uint32_t off, len, cap; /* data[off..len) is waiting to be written */
	uint8_t kind;		/* enum npd_buf_kind */
	uint8_t data[];
};

/* One worker's buffers: only its thread takes and gives back. Zeroed is empty. */
struct npd_buf_pool {
	struct npd_buf *free_small, *free_bulk;
	size_t nfree_small, nfree_bulk;
	size_t nbulk_lent;
};

/*
 * A buffer of NPD_BUF_SIZE, or for bulk of NPD_BULK_SIZE while fewer than
 * NPD_BULK_MAX are lent (else a small one), empty (off = len = 0). NULL only
 * when out of memory.
 */
struct npd_buf *npd_buf_get(struct npd_buf_pool *p, bool bulk);

/* A buffer of cap bytes that belongs to no pool, holding a copy of b's bytes. NULL: no memory. */
struct npd_buf *npd_buf_oversize(const struct npd_buf *b, size_t cap);

/* Give b back, whatever its kind: a pool keeps a few of each, frees the rest. */
void npd_buf_put(struct npd_buf_pool *p, struct npd_buf *b);

/* Free every buffer the pool keeps (none may be lent any more). */
void npd_buf_pool_free(struct npd_buf_pool *p);

#endif /* NPD_BUFFERS_H */
