/*
 * netproxy.h - the PROXY protocol, versions 1 and 2: parse and build headers
 * and their TLVs.
 *
 * The only public header of libnetproxy. The library allocates nothing and,
 * apart from np_try_recv_header() and np_recv_header(), makes no system
 * calls: every output points into memory the caller owns. Errors are negative NP_E* constants; the
 * library never sets errno except where those two say so.
 *
 *   int n = np_parse(buf, len, &hdr);
 *   n > 0          the header is the first n bytes; buf[n..len) is application data
 *   n == NP_EAGAIN a valid prefix so far: call again with more bytes
 *   n < 0          not a valid header; np_strerror(n) says why
 *
 * Specification: HAProxy's doc/proxy-protocol.txt, revision 2026/04/27.
 */
#ifndef NETPROXY_H
#define NETPROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NP_VERSION_STRING "0.1.0"
/* The same as one number, major * 10000 + minor * 100 + patch: 0.1.0 is 100. */
#define NP_VERSION_NUMBER 100

#if defined(__GNUC__) && defined(NP_BUILDING_LIBRARY)
#define NP_EXPORT __attribute__((visibility("default")))
#else
#define NP_EXPORT
#endif

/*
 * Errors. One list gives the constants, np_strerror() and np_errname().
 * Values are stable: new codes are only ever appended.
 */
#define NP_ERRNO_MAP(X)                                                              \
	X(EAGAIN, -1, "incomplete header: more bytes are needed")                    \
	X(ENOTPROXY, -2, "not a PROXY protocol header")                              \
	X(EVERSION, -3, "unsupported PROXY protocol version")                        \
	X(ECOMMAND, -4, "invalid v2 command")                                        \
	X(EFAMILY, -5, "invalid or unsupported address family")                      \
	X(ETRANSPORT, -6, "invalid transport protocol")                              \
	X(ELINE, -7, "malformed v1 line")                                            \
	X(ETOOLONG, -8, "v1 line has no CRLF within 107 bytes")                      \
	X(EADDRESS, -9, "invalid address")                                           \
	X(EPORT, -10, "invalid port")                                                \
	X(ESHORT, -11, "v2 length does not cover the address block")                 \
	X(ETOOBIG, -12, "header larger than the allowed maximum")                    \
	X(ETLV, -13, "malformed TLV area")                                           \
	X(ETLVVALUE, -14, "TLV value of invalid length or layout")                   \
	X(ECRC, -15, "CRC32C checksum mismatch")                                     \
	X(ENOSPC, -16, "output buffer too small")                                    \
	X(EINVAL, -17, "invalid argument")                                           \
	X(ETIMEDOUT, -18, "timed out waiting for the header")                        \
	X(ECLOSED, -19, "connection closed before the header was complete")          \
	X(ESYS, -20, "system call failed (see errno)")

enum np_error {
#define NP_ERRNO_ENUM_(name, value, text) NP_##name = (value),
	NP_ERRNO_MAP(NP_ERRNO_ENUM_)
#undef NP_ERRNO_ENUM_
};

/* A sentence for an error code ("unknown error" for anything else). */
NP_EXPORT const char *np_strerror(int err);
/* The constant's name, "NP_ETLV" for NP_ETLV ("NP_UNKNOWN" for anything else). */
NP_EXPORT const char *np_errname(int err);

/* Wire values; the v2 nibbles are exactly these numbers. */
enum np_command {
	NP_CMD_LOCAL = 0, /* use the connection's real endpoints (health checks, v1 UNKNOWN) */
	NP_CMD_PROXY = 1, /* the header carries the original endpoints */
};

enum np_family {
	NP_AF_UNSPEC = 0,
	NP_AF_INET = 1,
	NP_AF_INET6 = 2,
	NP_AF_UNIX = 3,
};

enum np_transport {
	NP_TRANSPORT_UNSPEC = 0,
	NP_TRANSPORT_STREAM = 1,
	NP_TRANSPORT_DGRAM = 2,
};

/* The protocol token of a v1 line; NP_V1_NONE in a v2 header. */
enum np_v1_proto {
	NP_V1_NONE = 0,
	NP_V1_TCP4,
	NP_V1_TCP6,
	NP_V1_UNKNOWN,
};

#define NP_V1_MAX_LEN 107	       /* a v1 line, CRLF included */
#define NP_V2_MIN_LEN 16	       /* the fixed part of a v2 header */
#define NP_V2_MAX_LEN (16 + 65535)    /* the largest v2 header */
#define NP_UNIX_PATH_LEN 108	       /* one AF_UNIX address in a v2 header */
#define NP_UNIQUE_ID_MAX 128	       /* spec 2.2.5 */
#define NP_ADDRSTRLEN 46	       /* np_format_addr() of INET/INET6, NUL included */

/* One end of the proxied connection. */
struct np_endpoint {
	union {
		uint8_t ip4[4];			/* NP_AF_INET, network order */
		uint8_t ip6[16];		/* NP_AF_INET6, network order */
		uint8_t path[NP_UNIX_PATH_LEN]; /* NP_AF_UNIX, NUL-padded, maybe unterminated */
	};
	uint16_t port; /* host order; 0 for NP_AF_UNIX */
};

/*
 * A parsed header. src and dst hold addresses only when np_has_addresses()
 * says so; otherwise their contents are unspecified and the connection's
 * real endpoints apply. family and transport are the v2 nibbles as sent,
 * also for LOCAL; a v1 line gives INET/INET6 with STREAM, or UNSPEC for
 * UNKNOWN. tlv points into the buffer given to np_parse(): the bytes after
 * the address block, already checked to be a well-formed TLV list.
 */
struct np_header {
	uint8_t version;   /* 1 or 2 */
	uint8_t command;   /* enum np_command */
	uint8_t family;    /* enum np_family */
	uint8_t transport; /* enum np_transport */
	uint8_t v1_proto;  /* enum np_v1_proto */
	struct np_endpoint src, dst;
	const uint8_t *tlv; /* TLV area inside the parsed buffer, or NULL */
	size_t tlv_len;
};

/* Nonzero when src and dst are meaningful: a PROXY header of family INET, INET6 or UNIX. */
static inline int np_has_addresses(const struct np_header *h)
{
	return h->command == NP_CMD_PROXY && h->family != NP_AF_UNSPEC;
}

/*
 * Parse a v1 or v2 header at the start of buf[0..len). Never reads past len
 * and keeps no state between calls. What can be judged early is judged as
 * soon as its bytes arrive: both signatures, the v1 protocol token, a lone CR
 * or LF, and the v2 version, command, family, transport and length; a v1
 * line's addresses and ports once its CRLF is there (spec 2.1).
 * *hdr is written only when the result is positive.
 * Returns the header length (> 0), NP_EAGAIN, or another NP_E* code.
 * A v2 header's TLV area is validated: structure, CRC32C (when present),
 * UNIQUE_ID length and SSL layout.
 */
NP_EXPORT int np_parse(const void *buf, size_t len, struct np_header *hdr);

/*
 * np_parse() with a cap on the header size, such as a daemon's
 * proxy_max_header: a v2 header whose announced length exceeds max_len fails
 * with NP_ETOOBIG as soon as its 16 fixed bytes are seen; so does a v1 line
 * longer than max_len (when max_len < 107). np_parse() caps at NP_V2_MAX_LEN.
 */
NP_EXPORT int np_parse_max(const void *buf, size_t len, size_t max_len, struct np_header *hdr);

/*
 * TLVs. A value is bytes with a length, never a C string.
 */
enum np_tlv_type {
	NP_TLV_ALPN = 0x01,
	NP_TLV_AUTHORITY = 0x02,
	NP_TLV_CRC32C = 0x03,
	NP_TLV_NOOP = 0x04,
	NP_TLV_UNIQUE_ID = 0x05,
	NP_TLV_SSL = 0x20,
	NP_TLV_NETNS = 0x30,
	NP_TLV_GCP = 0xE0,   /* Google Cloud Private Service Connect */
	NP_TLV_AWS = 0xEA,   /* AWS PrivateLink (Network Load Balancer) */
	NP_TLV_AZURE = 0xEE, /* Azure Private Link */
};

/* Sub-TLVs inside NP_TLV_SSL. */
enum np_ssl_subtype {
	NP_SSL_VERSION = 0x21,
	NP_SSL_CN = 0x22,
	NP_SSL_CIPHER = 0x23,
	NP_SSL_SIG_ALG = 0x24,
	NP_SSL_KEY_ALG = 0x25,
	NP_SSL_GROUP = 0x26,
	NP_SSL_SIG_SCHEME = 0x27,
	NP_SSL_CLIENT_CERT = 0x28,
};

/* Bits of struct np_ssl.client. */
#define NP_SSL_CLIENT_SSL 0x01	     /* the client connected over TLS */
#define NP_SSL_CLIENT_CERT_CONN 0x02 /* it presented a certificate on this connection */
#define NP_SSL_CLIENT_CERT_SESS 0x04 /* it presented one at least once in this TLS session */

struct np_tlv {
	uint8_t type;
	uint16_t len;
	const uint8_t *value; /* len bytes */
};

/* A cursor over a TLV list: a header's TLV area or an SSL TLV's sub-TLVs. */
struct np_tlv_iter {
	const uint8_t *pos; /* the next TLV */
	size_t left;	    /* bytes from pos to the end of the list */
};

/* Start iterating over the TLV list area[0..len). */
NP_EXPORT void np_tlv_iter_init(struct np_tlv_iter *it, const void *area, size_t len);

/*
 * Store the next TLV in *tlv. Returns 1 when one was stored, 0 at the end of
 * the list, NP_ETLV when the list is malformed (a TLV runs past the end).
 */
NP_EXPORT int np_tlv_next(struct np_tlv_iter *it, struct np_tlv *tlv);

/*
 * Find the first TLV of the given type in a parsed header's TLV area.
 * Returns 1 and fills *tlv when found, 0 when absent, NP_ETLV when malformed.
 */
NP_EXPORT int np_tlv_find(const struct np_header *hdr, uint8_t type, struct np_tlv *tlv);

/* The SSL TLV (0x20), decoded. */
struct np_ssl {
	uint8_t client;	 /* NP_SSL_CLIENT_* bits */
	uint32_t verify; /* 0 when a presented certificate was verified */
	const uint8_t *sub; /* the sub-TLV list, for np_tlv_iter_init() or np_ssl_find() */
	size_t sub_len;
};

/*
 * Decode an SSL TLV. Returns 0, or NP_ETLVVALUE when tlv is not type 0x20, is
 * shorter than 5 bytes or its sub-TLVs are malformed.
 */
NP_EXPORT int np_ssl_decode(const struct np_tlv *tlv, struct np_ssl *ssl);

/* Find the first sub-TLV of the given type: 1 found, 0 absent, NP_ETLV malformed. */
NP_EXPORT int np_ssl_find(const struct np_ssl *ssl, uint8_t subtype, struct np_tlv *sub);

/*
 * Nonzero when the client presented a certificate that was verified. verify
 * alone cannot say it: senders leave it 0 when no certificate was presented.
 */
NP_EXPORT int np_ssl_verified(const struct np_ssl *ssl);

/*
 * Vendor TLVs from the custom range. A custom type means something only
 * behind the vendor that sends it: decode these only when so configured.
 * Each returns 0, or NP_ETLVVALUE when tlv has another type or layout.
 */
/* AWS 0xEA subtype 0x01: the VPC endpoint id (ASCII, "vpce-..."), not NUL-terminated. */
NP_EXPORT int np_tlv_aws_vpce_id(const struct np_tlv *tlv, const uint8_t **id, size_t *len);
/* Azure 0xEE subtype 0x01: the private endpoint link id (sent little-endian). */
NP_EXPORT int np_tlv_azure_link_id(const struct np_tlv *tlv, uint32_t *link_id);
/* GCP 0xE0: the 8-byte Private Service Connect connection id (sent big-endian). */
NP_EXPORT int np_tlv_gcp_psc_id(const struct np_tlv *tlv, uint64_t *psc_id);

/*
 * TLV names, as PROXY protocol documents and HAProxy spell them: "ALPN",
 * "AUTHORITY", "CRC32C", "NOOP", "UNIQUE_ID", "SSL", "NETNS", and the vendor
 * types "AWS", "AZURE", "GCP". np_tlv_name() returns the name of type, or
 * NULL for a type without one; np_tlv_type() the type named by
 * name[0..len), case ignored, or NP_EINVAL. The list may grow.
 */
NP_EXPORT const char *np_tlv_name(uint8_t type);
NP_EXPORT int np_tlv_type(const char *name, size_t len);

/*
 * CRC32C (Castagnoli) as used by PP2_TYPE_CRC32C. np_crc32c() continues a
 * running value: start with 0. It uses SSE4.2 where the CPU has it and a
 * table otherwise; both give the same answers.
 */
NP_EXPORT uint32_t np_crc32c(uint32_t crc, const void *data, size_t len);

/*
 * Builders. Each writes into buf[0..cap) and returns the bytes written, or
 * NP_ENOSPC when cap is too small (nothing useful is written then).
 */

/*
 * A v1 line. PROXY over INET or INET6 with STREAM becomes TCP4 or TCP6;
 * everything else (LOCAL, UNSPEC, UNIX, DGRAM) becomes "PROXY UNKNOWN\r\n",
 * as the specification asks. Never more than NP_V1_MAX_LEN bytes.
 */
NP_EXPORT int np_build_v1(void *buf, size_t cap, const struct np_header *hdr);

#define NP_BUILD_CRC32C 0x1 /* checksum the v2 header */

/*
 * A v2 header followed by the TLVs tlvs[0..ntlv) in that order (hdr->tlv is
 * not used). A LOCAL header is sent with family UNSPEC and no address block
 * (spec 2.2). With NP_BUILD_CRC32C the checksum is written into the first
 * CRC32C TLV of the list, which must have 4 bytes of value (its value is
 * ignored), or into a CRC32C TLV added in front of the list when there is none.
 * NP_EINVAL: a command other than LOCAL and PROXY, a PROXY family/transport
 * outside the spec's seven combinations, with NP_BUILD_CRC32C a CRC32C TLV
 * whose value is not 4 bytes or more than one of them, or more than 65535
 * bytes after the fixed part.
 */
NP_EXPORT int np_build_v2(void *buf, size_t cap, const struct np_header *hdr,
			  const struct np_tlv *tlvs, size_t ntlv, unsigned flags);

/*
 * Addresses.
 */

/*
 * Write an endpoint's address as text into out[0..cap): dotted quad for
 * INET, RFC 5952 for INET6 (hex groups only, lower case, longest zero run
 * compressed), the path up to its first NUL for UNIX. Returns the length
 * written, not counting the NUL, or NP_ENOSPC / NP_EINVAL.
 */
NP_EXPORT int np_format_addr(char *out, size_t cap, uint8_t family, const struct np_endpoint *ep);

/*
 * Fill *ss with an endpoint as a socket address of its family (AF_INET,
 * AF_INET6 or AF_UNIX). Returns its length for bind()/connect(), or
 * NP_EINVAL when the header carries no addresses (np_has_addresses()).
 */
NP_EXPORT int np_endpoint_to_sockaddr(const struct np_header *hdr, const struct np_endpoint *ep,
				       struct sockaddr_storage *ss);

/*
 * Make *hdr a PROXY header (version 2, STREAM) for the connection from src to
 * dst, two socket addresses of the same family, such as getpeername() and
 * getsockname() give. Each must be a whole struct sockaddr_in, sockaddr_in6
 * or sockaddr_un: all 108 bytes of sun_path are copied, so zero it before
 * getsockname() fills it. tlv is left empty. Returns 0, or NP_EINVAL for
 * mixed or unsupported families.
 */
NP_EXPORT int np_header_from_sockaddr(struct np_header *hdr, const struct sockaddr *src,
				       const struct sockaddr *dst);

/*
 * The same for addresses of srclen and dstlen bytes, as accept(),
 * getpeername() and getsockname() report them; no byte past either length
 * is read. An INET or INET6 address must be whole; a UNIX address's path is
 * what its length covers, NUL-padded (an unnamed socket's is empty).
 * Returns 0, or NP_EINVAL for a NULL argument, a length too short for its
 * family, or mixed or unsupported families.
 */
NP_EXPORT int np_header_from_sockaddr_len(struct np_header *hdr, const struct sockaddr *src,
					   socklen_t srclen, const struct sockaddr *dst,
					   socklen_t dstlen);

/*
 * Write the socket address sa, of len bytes, as text into out[0..cap):
 * "192.0.2.1:443", "[2001:db8::1]:443" (the address as np_format_addr()
 * writes it), "unix:/run/x.sock", "unix:@name" for an abstract one, "unix:"
 * for an unnamed one. Returns the length written, not counting the NUL;
 * NP_ENOSPC when it does not fit; NP_EINVAL for another family or a len
 * too short for its family. NP_SOCKADDRSTRLEN bytes suffice for INET and
 * INET6.
 */
#define NP_SOCKADDRSTRLEN (NP_ADDRSTRLEN + 8) /* "[", "]:", 5 digits */
NP_EXPORT int np_format_sockaddr(char *out, size_t cap, const struct sockaddr *sa, socklen_t len);

/*
 * Address blocks, as in a list of trusted senders ("127.0.0.1", "::1",
 * "192.0.2.0/24", "2001:db8::/32"). One meaning wherever netproxy reads such
 * a list: a bare address is one host; an IPv4 peer, also one that a
 * dual-stack socket shows as ::ffff:a.b.c.d, is matched by IPv4 blocks only,
 * an IPv6 peer by IPv6 blocks only.
 */
struct np_cidr {
	uint8_t family;	  /* NP_AF_INET or NP_AF_INET6 */
	uint8_t prefix;	  /* 0..32 or 0..128 */
	uint8_t addr[16]; /* network order, host bits zero; IPv4 in the first 4 bytes */
};

/*
 * Parse text[0..len), an address in the v1 grammar (a dotted quad without
 * leading zeros, or IPv6 hex groups; no zone id) with an optional "/n"
 * prefix of 1 to 3 digits; host bits are cleared. Returns 0 with *out
 * filled; NP_EADDRESS for the address, NP_EINVAL for the prefix (or a NULL
 * argument), NP_EFAMILY for a block inside ::ffff:0:0/96, which no peer can
 * match: *out is then that block written as IPv4, what to suggest instead.
 */
NP_EXPORT int np_cidr_parse(const char *text, size_t len, struct np_cidr *out);

/* 1 when sa, an AF_INET or AF_INET6 address, is inside c; else 0. */
NP_EXPORT int np_cidr_match(const struct np_cidr *c, const struct sockaddr *sa);

/* NP_VERSION_NUMBER of the library loaded at run time, which may be newer than the header. */
NP_EXPORT unsigned np_version(void);

/*
 * One non-blocking attempt at exactly one header on the connected stream
 * socket fd, for event loops: peek at what has arrived into buf[0..cap),
 * parse it with np_parse_max(..., cap, hdr), and consume the header's bytes
 * once it is complete, or nothing. Never a byte of application data.
 * Returns the header length with *hdr filled (its TLVs point into buf) and
 * exactly that many bytes consumed; NP_EAGAIN when the header is incomplete
 * or nothing has arrived (nothing consumed: call again when fd is readable;
 * meanwhile SO_RCVLOWAT is raised so that TCP reports fd readable only when
 * more bytes arrive, and a complete header sets it back to 1); NP_ECLOSED
 * when the peer closed first; NP_ETOOBIG when cap bytes hold no complete
 * header; NP_EINVAL for a cap of 0 or a NULL buf or hdr; NP_ESYS with errno
 * set; or the parse error (nothing consumed).
 */
NP_EXPORT int np_try_recv_header(int fd, void *buf, size_t cap, struct np_header *hdr);

/*
 * Read exactly one header from the connected socket fd into buf[0..cap),
 * waiting at most timeout_ms milliseconds in all (-1: no limit; 0: take only
 * what has already arrived). Works on
 * blocking and non-blocking sockets. Bytes are peeked first and only those
 * that belong to the header are consumed, so the first byte of application
 * data is the next one the caller reads, however the header was segmented.
 * Returns the header length with *hdr filled (its TLVs point into buf);
 * NP_ETIMEDOUT; NP_ECLOSED when the peer closed first; NP_ETOOBIG when the
 * header does not fit in cap; NP_EINVAL when cap is 0; NP_ESYS with errno
 * set when a system call failed; or the parse error. It is a loop of
 * np_try_recv_header() and poll(); after an error close the connection.
 */
NP_EXPORT int np_recv_header(int fd, void *buf, size_t cap, struct np_header *hdr, int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* NETPROXY_H */
