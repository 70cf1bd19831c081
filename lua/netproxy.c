/*
 * netproxy.c - libnetproxy for Lua 5.4: require "netproxy".
 *
 *   local np = require "netproxy"
 *   local h, n = np.parse(bytes)               -- or nil, "reason", "NP_ECODE"
 *   local h, n = np.try_recv(conn:getfd(), 4096)
 *   for t, v in np.tlvs(h.tlv) do ... end
 *   local c = np.cidr("192.0.2.0/24"); c:match("192.0.2.7") --> true
 *
 * The library's calls, one Lua function each, nothing more: no protocol
 * logic lives here. Strings in, strings out: every byte string (a header, a
 * TLV area, a value) goes in and out with its length, never as a C string.
 * Errors are returned, never raised, as nil, np_strerror()'s sentence and
 * np_errname()'s name; a wrong argument type is a Lua error, as in the
 * standard library. No global state: the only shared things are the
 * registry's metatable for CIDR blocks and the module table itself.
 *
 * The library is linked into this module, so that loading it needs nothing
 * but the file Lua's package.cpath finds.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "netproxy.h"

#if defined(__GNUC__)
#define NPL_EXPORT __attribute__((visibility("default")))
#else
#define NPL_EXPORT
#endif

#define CIDR_MT "netproxy.cidr"

/* What a header read from a socket may cost on the C stack; larger caps take a userdata. */
#define STACK_BUF 4096

int luaopen_netproxy(lua_State *L);

/* nil, reason, "NP_ECODE": the binding's one shape of failure. */
static int push_error(lua_State *L, int err)
{
	lua_pushnil(L);
	if (err == NP_ESYS)
		lua_pushfstring(L, "%s: %s", np_strerror(err), strerror(errno));
	else
		lua_pushstring(L, np_strerror(err));
	lua_pushstring(L, np_errname(err));
	return 3;
}

static const char *const command_names[] = {"LOCAL", "PROXY"};
static const char *const family_names[] = {"UNSPEC", "INET", "INET6", "UNIX"};
static const char *const transport_names[] = {"UNSPEC", "STREAM", "DGRAM"};
static const char *const v1_names[] = {NULL, "TCP4", "TCP6", "UNKNOWN"};

/* A name from a table of names, or nil for a value outside it. */
static void push_name(lua_State *L, const char *const *names, size_t n, unsigned v)
{
	if (v < n && names[v] != NULL)
		lua_pushstring(L, names[v]);
	else
		lua_pushnil(L);
}

static void set_endpoint(lua_State *L, const struct np_header *h, const struct np_endpoint *ep,
			 const char *addr_key, const char *port_key)
{
	char text[NP_UNIX_PATH_LEN + 1];
	int n = np_format_addr(text, sizeof(text), h->family, ep);

	if (n >= 0) {
		lua_pushlstring(L, text, (size_t)n);
		lua_setfield(L, -2, addr_key);
	}
	if (h->family == NP_AF_INET || h->family == NP_AF_INET6) {
		lua_pushinteger(L, ep->port);
		lua_setfield(L, -2, port_key);
	}
}

/*
 * The header as a table: version, command, family, transport, v1 (the v1
 * protocol word), src_addr, src_port, dst_addr, dst_port (when the header
 * carries addresses), tlv (the TLV area, "" when there is none).
 */
static void push_header(lua_State *L, const struct np_header *h)
{
	lua_createtable(L, 0, 10);
	lua_pushinteger(L, h->version);
	lua_setfield(L, -2, "version");
	push_name(L, command_names, 2, h->command);
	lua_setfield(L, -2, "command");
	push_name(L, family_names, 4, h->family);
	lua_setfield(L, -2, "family");
	push_name(L, transport_names, 3, h->transport);
	lua_setfield(L, -2, "transport");
	if (h->version == 1) {
		push_name(L, v1_names, 4, h->v1_proto);
		lua_setfield(L, -2, "v1");
	}
	if (np_has_addresses(h)) {
		set_endpoint(L, h, &h->src, "src_addr", "src_port");
		set_endpoint(L, h, &h->dst, "dst_addr", "dst_port");
	}
	lua_pushlstring(L, h->tlv != NULL ? (const char *)h->tlv : "", h->tlv != NULL ? h->tlv_len : 0);
	lua_setfield(L, -2, "tlv");
}

/* An optional size cap: 1 .. NP_V2_MAX_LEN, default def. */
static size_t opt_cap(lua_State *L, int arg, lua_Integer def)
{
	lua_Integer cap = luaL_optinteger(L, arg, def);

	luaL_argcheck(L, cap >= 1 && cap <= NP_V2_MAX_LEN, arg, "a size cap from 1 to 65551");
	return (size_t)cap;
}

/* parse(bytes [, max]) -> header, length | nil, reason, code */
static int l_parse(lua_State *L)
{
	size_t len;
	const char *buf = luaL_checklstring(L, 1, &len);
	size_t cap = opt_cap(L, 2, NP_V2_MAX_LEN);
	struct np_header h;
	int n = np_parse_max(buf, len, cap, &h);

	if (n < 0)
		return push_error(L, n);
	push_header(L, &h);
	lua_pushinteger(L, n);
	return 2;
}

/*
 * try_recv(fd [, max]) -> header, length | nil, reason, code
 * np_try_recv_header() on a socket descriptor (conn:getfd()); max defaults to 4096.
 */
static int l_try_recv(lua_State *L)
{
	lua_Integer fd = luaL_checkinteger(L, 1);
	size_t cap = opt_cap(L, 2, STACK_BUF);
	uint8_t stack_buf[STACK_BUF];
	uint8_t *buf = stack_buf;
	struct np_header h;

	luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "a file descriptor");
	if (cap > sizeof(stack_buf))
		buf = lua_newuserdatauv(L, cap, 0); /* garbage once this call returns */
	int n = np_try_recv_header((int)fd, buf, cap, &h);
	if (n < 0)
		return push_error(L, n);
	push_header(L, &h); /* copies the TLV area out of buf */
	lua_pushinteger(L, n);
	return 2;
}

/* The TLV list area[0..len) from argument arg. */
static void check_area(lua_State *L, int arg, struct np_tlv_iter *it)
{
	size_t len;
	const char *area = luaL_checklstring(L, arg, &len);

	np_tlv_iter_init(it, area, len);
}

/* tlv_list(area) -> { {type=, value=}, ... } | nil, reason, code */
static int l_tlv_list(lua_State *L)
{
	struct np_tlv_iter it;
	struct np_tlv t;
	lua_Integer i = 0;
	int r;

	check_area(L, 1, &it);
	lua_newtable(L);
	while ((r = np_tlv_next(&it, &t)) == 1) {
		lua_createtable(L, 0, 2);
		lua_pushinteger(L, t.type);
		lua_setfield(L, -2, "type");
		lua_pushlstring(L, (const char *)t.value, t.len);
		lua_setfield(L, -2, "value");
		lua_rawseti(L, -2, ++i);
	}
	if (r < 0)
		return push_error(L, r);
	return 1;
}

/* The iterator of tlvs(): upvalue 1 is the area, upvalue 2 the offset of the next TLV. */
static int tlvs_next(lua_State *L)
{
	size_t len;
	const char *area = lua_tolstring(L, lua_upvalueindex(1), &len);
	lua_Integer at = lua_tointeger(L, lua_upvalueindex(2));
	struct np_tlv_iter it;
	struct np_tlv t;

	if (at < 0 || (size_t)at >= len)
		return 0;
	np_tlv_iter_init(&it, area + at, len - (size_t)at);
	if (np_tlv_next(&it, &t) != 1)
		return 0; /* the end, or a malformed rest: tlv_list() says which */
	lua_pushinteger(L, at + 3 + t.len);
	lua_replace(L, lua_upvalueindex(2));
	lua_pushinteger(L, t.type);
	lua_pushlstring(L, (const char *)t.value, t.len);
	return 2;
}

/*
 * for type, value in tlvs(area) do ... end
 * The loop ends at the end of the list or where it stops being well formed
 * (a parsed header's area never does).
 */
static int l_tlvs(lua_State *L)
{
	luaL_checkstring(L, 1);
	lua_settop(L, 1);
	lua_pushinteger(L, 0);
	lua_pushcclosure(L, tlvs_next, 2);
	return 1;
}

/* find(area, type) -> value | false | nil, reason, code */
static int l_tlv_find(lua_State *L)
{
	struct np_tlv_iter it;
	struct np_tlv t;
	lua_Integer type = luaL_checkinteger(L, 2);
	int r;

	check_area(L, 1, &it);
	luaL_argcheck(L, type >= 0 && type <= 255, 2, "a TLV type from 0 to 255");
	while ((r = np_tlv_next(&it, &t)) == 1) {
		if (t.type == type) {
			lua_pushlstring(L, (const char *)t.value, t.len);
			return 1;
		}
	}
	if (r < 0)
		return push_error(L, r);
	lua_pushboolean(L, 0);
	return 1;
}

static const struct {
	const char *name;
	uint8_t type;
} ssl_subs[] = {
	{"version", NP_SSL_VERSION}, {"cn", NP_SSL_CN},		{"cipher", NP_SSL_CIPHER},
	{"sig_alg", NP_SSL_SIG_ALG}, {"key_alg", NP_SSL_KEY_ALG}, {"group", NP_SSL_GROUP},
	{"sig_scheme", NP_SSL_SIG_SCHEME}, {"client_cert", NP_SSL_CLIENT_CERT},
};

/*
 * ssl(value) -> { client=, verify=, verified=, sub=, version=, cn=, ... }
 *             | nil, reason, code
 * value is an SSL TLV's (type 0x20); the known sub-TLVs are named fields.
 */
static int l_ssl(lua_State *L)
{
	size_t len;
	const char *value = luaL_checklstring(L, 1, &len);
	struct np_tlv t = {.type = NP_TLV_SSL, .len = (uint16_t)len, .value = (const uint8_t *)value};
	struct np_tlv sub;
	struct np_ssl ssl;
	int r;

	if (len > 65535)
		return push_error(L, NP_ETLVVALUE);
	if ((r = np_ssl_decode(&t, &ssl)) != 0)
		return push_error(L, r);
	lua_createtable(L, 0, 12);
	lua_pushinteger(L, ssl.client);
	lua_setfield(L, -2, "client");
	lua_pushinteger(L, (lua_Integer)ssl.verify);
	lua_setfield(L, -2, "verify");
	lua_pushboolean(L, np_ssl_verified(&ssl));
	lua_setfield(L, -2, "verified");
	lua_pushlstring(L, (const char *)ssl.sub, ssl.sub_len);
	lua_setfield(L, -2, "sub");
	for (size_t i = 0; i < sizeof(ssl_subs) / sizeof(ssl_subs[0]); i++) {
		if (np_ssl_find(&ssl, ssl_subs[i].type, &sub) == 1) {
			lua_pushlstring(L, (const char *)sub.value, sub.len);
			lua_setfield(L, -2, ssl_subs[i].name);
		}
	}
	return 1;
}

/* The index of name in names[0..n), or -1. */
static int name_index(const char *const *names, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (names[i] != NULL && strcmp(names[i], name) == 0)
			return i;
	return -1;
}

/* A field of table arg naming one of names, default def; -1 for a wrong one. */
static int field_enum(lua_State *L, int arg, const char *key, const char *const *names, int n, int def)
{
	int r = def;

	if (lua_getfield(L, arg, key) != LUA_TNIL) {
		const char *s = lua_tostring(L, -1);
		r = s != NULL ? name_index(names, n, s) : -1;
	}
	lua_pop(L, 1);
	return r;
}

/* An endpoint from fields addr_key/port_key of table arg; 0 or NP_EINVAL/NP_EADDRESS/NP_EPORT. */
static int field_endpoint(lua_State *L, int arg, int family, const char *addr_key, const char *port_key,
			  struct np_endpoint *ep)
{
	size_t len;
	int ok = 1;

	memset(ep, 0, sizeof(*ep));
	lua_getfield(L, arg, addr_key);
	const char *addr = lua_tolstring(L, -1, &len);
	if (addr == NULL)
		ok = 0;
	else if (family == NP_AF_INET)
		ok = inet_pton(AF_INET, addr, ep->ip4) == 1;
	else if (family == NP_AF_INET6)
		ok = inet_pton(AF_INET6, addr, ep->ip6) == 1;
	else if (len <= NP_UNIX_PATH_LEN)
		memcpy(ep->path, addr, len);
	else
		ok = 0;
	lua_pop(L, 1);
	if (!ok)
		return NP_EADDRESS;
	if (family == NP_AF_UNIX)
		return 0;
	lua_getfield(L, arg, port_key);
	int isnum;
	lua_Integer port = lua_tointegerx(L, -1, &isnum);
	lua_pop(L, 1);
	if (!isnum || port < 0 || port > 65535)
		return NP_EPORT;
	ep->port = (uint16_t)port;
	return 0;
}

/*
 * The header described by table arg: command (default "PROXY"), family
 * (default "UNSPEC"), transport (default "STREAM" with addresses, else
 * "UNSPEC"), src_addr, src_port, dst_addr, dst_port.
 */
static int check_header(lua_State *L, int arg, int version, struct np_header *h)
{
	int r;

	luaL_checktype(L, arg, LUA_TTABLE);
	memset(h, 0, sizeof(*h));
	h->version = (uint8_t)version;
	int command = field_enum(L, arg, "command", command_names, 2, NP_CMD_PROXY);
	int family = field_enum(L, arg, "family", family_names, 4, NP_AF_UNSPEC);
	int transport = field_enum(L, arg, "transport", transport_names, 3,
				   family > NP_AF_UNSPEC ? NP_TRANSPORT_STREAM : NP_TRANSPORT_UNSPEC);
	if (command < 0)
		return NP_ECOMMAND;
	if (family < 0)
		return NP_EFAMILY;
	if (transport < 0)
		return NP_ETRANSPORT;
	h->command = (uint8_t)command;
	h->family = (uint8_t)family;
	h->transport = (uint8_t)transport;
	if (np_has_addresses(h)) {
		if ((r = field_endpoint(L, arg, family, "src_addr", "src_port", &h->src)) != 0 ||
		    (r = field_endpoint(L, arg, family, "dst_addr", "dst_port", &h->dst)) != 0)
			return r;
	}
	return 0;
}

/* build_v1(header) -> bytes | nil, reason, code */
static int l_build_v1(lua_State *L)
{
	char out[NP_V1_MAX_LEN];
	struct np_header h;
	int n = check_header(L, 1, 1, &h);

	if (n == 0)
		n = np_build_v1(out, sizeof(out), &h);
	if (n < 0)
		return push_error(L, n);
	lua_pushlstring(L, out, (size_t)n);
	return 1;
}

#define MAX_BUILD_TLVS 64

/* Field i, or else field key, of the table at index t, read raw: no metamethod runs. */
static int raw_field(lua_State *L, int t, lua_Integer i, const char *key)
{
	if (lua_rawgeti(L, t, i) != LUA_TNIL)
		return lua_type(L, -1);
	lua_pop(L, 1);
	lua_pushstring(L, key);
	return lua_rawget(L, t);
}

/*
 * build_v2(header [, tlvs [, crc32c]]) -> bytes | nil, reason, code
 * tlvs: a list of { type, value } (or { type = , value = }), in order.
 */
static int l_build_v2(lua_State *L)
{
	struct np_tlv tlvs[MAX_BUILD_TLVS];
	struct np_header h;
	size_t ntlv = 0;
	int n = check_header(L, 1, 2, &h);
	unsigned flags = lua_toboolean(L, 3) ? NP_BUILD_CRC32C : 0;

	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		lua_Integer count = (lua_Integer)lua_rawlen(L, 2);
		luaL_argcheck(L, count <= MAX_BUILD_TLVS, 2, "at most 64 TLVs");
		luaL_checkstack(L, (int)count + 3, "TLV values");
		for (lua_Integer i = 1; i <= count; i++) {
			size_t len;

			luaL_argcheck(L, lua_rawgeti(L, 2, i) == LUA_TTABLE, 2, "each TLV a table { type, value }");
			int item = lua_gettop(L);
			int isnum;
			raw_field(L, item, 1, "type");
			lua_Integer type = lua_tointegerx(L, -1, &isnum);
			luaL_argcheck(L, isnum && type >= 0 && type <= 255, 2, "a TLV type from 0 to 255");
			luaL_argcheck(L, raw_field(L, item, 2, "value") == LUA_TSTRING, 2, "a TLV value: a string");
			const char *value = lua_tolstring(L, -1, &len);
			luaL_argcheck(L, len <= 65535, 2, "a TLV value of at most 65535 bytes");
			/* The value stays on the stack, in the item's slot, until the build is done. */
			lua_replace(L, item);
			lua_pop(L, 1);
			tlvs[ntlv++] = (struct np_tlv){.type = (uint8_t)type, .len = (uint16_t)len,
						       .value = (const uint8_t *)value};
		}
	}
	if (n < 0)
		return push_error(L, n);

	/* Most headers fit in 512 bytes; the largest legal one gets a buffer of its size. */
	char small[512];
	n = np_build_v2(small, sizeof(small), &h, tlvs, ntlv, flags);
	if (n >= 0) {
		lua_pushlstring(L, small, (size_t)n);
		return 1;
	}
	if (n == NP_ENOSPC) {
		luaL_Buffer b;
		char *out = luaL_buffinitsize(L, &b, NP_V2_MAX_LEN);

		n = np_build_v2(out, NP_V2_MAX_LEN, &h, tlvs, ntlv, flags);
		if (n >= 0) {
			luaL_pushresultsize(&b, (size_t)n);
			return 1;
		}
	}
	return push_error(L, n);
}

/* cidr(text) -> block | nil, reason, code */
static int l_cidr(lua_State *L)
{
	size_t len;
	const char *text = luaL_checklstring(L, 1, &len);
	struct np_cidr c;
	int r = np_cidr_parse(text, len, &c);

	if (r != 0)
		return push_error(L, r);
	struct np_cidr *u = lua_newuserdatauv(L, sizeof(*u), 0);
	*u = c;
	luaL_setmetatable(L, CIDR_MT);
	return 1;
}

/*
 * block:match(address) -> boolean | nil, reason, code
 * address: a peer's text, as conn:ip() gives it ("192.0.2.7", "::1",
 * "::ffff:192.0.2.7"); np_cidr_match() decides.
 */
static int l_cidr_match(lua_State *L)
{
	const struct np_cidr *c = luaL_checkudata(L, 1, CIDR_MT);
	const char *text = luaL_checkstring(L, 2);
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
	struct sockaddr_in s4 = {.sin_family = AF_INET};
	const struct sockaddr *sa;

	if (inet_pton(AF_INET, text, &s4.sin_addr) == 1)
		sa = (const struct sockaddr *)&s4;
	else if (inet_pton(AF_INET6, text, &s6.sin6_addr) == 1)
		sa = (const struct sockaddr *)&s6;
	else
		return push_error(L, NP_EADDRESS);
	lua_pushboolean(L, np_cidr_match(c, sa));
	return 1;
}

static int l_cidr_tostring(lua_State *L)
{
	const struct np_cidr *c = luaL_checkudata(L, 1, CIDR_MT);
	struct np_endpoint ep;
	char text[NP_ADDRSTRLEN];

	memcpy(ep.ip6, c->addr, sizeof(ep.ip6));
	int n = np_format_addr(text, sizeof(text), c->family, &ep);
	lua_pushfstring(L, "%s/%d", n >= 0 ? text : "?", (int)c->prefix);
	return 1;
}

/* strerror(code) -> sentence, name: for a code from elsewhere (a number). */
static int l_strerror(lua_State *L)
{
	int code = (int)luaL_checkinteger(L, 1);

	lua_pushstring(L, np_strerror(code));
	lua_pushstring(L, np_errname(code));
	return 2;
}

static const luaL_Reg functions[] = {
	{"parse", l_parse},
	{"try_recv", l_try_recv},
	{"tlvs", l_tlvs},
	{"tlv_list", l_tlv_list},
	{"tlv_find", l_tlv_find},
	{"ssl", l_ssl},
	{"build_v1", l_build_v1},
	{"build_v2", l_build_v2},
	{"cidr", l_cidr},
	{"cidr_match", l_cidr_match},
	{"strerror", l_strerror},
	{NULL, NULL},
};

static const luaL_Reg cidr_methods[] = {
	{"match", l_cidr_match},
	{NULL, NULL},
};

static const struct {
	const char *name;
	int value;
} constants[] = {
	{"TLV_ALPN", NP_TLV_ALPN},	       {"TLV_AUTHORITY", NP_TLV_AUTHORITY},
	{"TLV_CRC32C", NP_TLV_CRC32C},	       {"TLV_NOOP", NP_TLV_NOOP},
	{"TLV_UNIQUE_ID", NP_TLV_UNIQUE_ID},   {"TLV_SSL", NP_TLV_SSL},
	{"TLV_NETNS", NP_TLV_NETNS},	       {"TLV_GCP", NP_TLV_GCP},
	{"TLV_AWS", NP_TLV_AWS},	       {"TLV_AZURE", NP_TLV_AZURE},
	{"SSL_CLIENT_SSL", NP_SSL_CLIENT_SSL}, {"SSL_CLIENT_CERT_CONN", NP_SSL_CLIENT_CERT_CONN},
	{"SSL_CLIENT_CERT_SESS", NP_SSL_CLIENT_CERT_SESS},
	{"V1_MAX_LEN", NP_V1_MAX_LEN},	       {"V2_MAX_LEN", NP_V2_MAX_LEN},
};

NPL_EXPORT int luaopen_netproxy(lua_State *L)
{
	luaL_checkversion(L);
	if (luaL_newmetatable(L, CIDR_MT)) {
		luaL_newlib(L, cidr_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, l_cidr_tostring);
		lua_setfield(L, -2, "__tostring");
		lua_pushliteral(L, CIDR_MT);
		lua_setfield(L, -2, "__name");
	}
	lua_pop(L, 1);

	luaL_newlib(L, functions);
	for (size_t i = 0; i < sizeof(constants) / sizeof(constants[0]); i++) {
		lua_pushinteger(L, constants[i].value);
		lua_setfield(L, -2, constants[i].name);
	}
	lua_pushliteral(L, NP_VERSION_STRING);
	lua_setfield(L, -2, "VERSION");
	return 1;
}
