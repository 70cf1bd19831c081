-- test_netproxy.lua - the Lua binding of libnetproxy, require "netproxy",
-- driven from Lua: its shape, parse, TLVs, SSL, builders, CIDR blocks and
-- the non-blocking exact read on a LuaSocket connection's descriptor.
--
-- Run by `make lua-unit` with LUA_CPATH_5_4 pointing at the built module.

local t = require "tap"

local globals_before = {}
for k in pairs(_G) do globals_before[k] = true end

local np = require "netproxy"

-- --- shape -----------------------------------------------------------------

t.is(type(np), "table", "require returns the module table")
for _, name in ipairs { "parse", "try_recv", "tlvs", "tlv_list", "tlv_find", "ssl", "build_v1",
		"build_v2", "cidr", "cidr_match", "strerror" } do
	t.is(type(np[name]), "function", "netproxy." .. name .. " is a function")
end
t.is(np.TLV_AUTHORITY, 0x02, "constants: TLV_AUTHORITY")
t.is(np.TLV_SSL, 0x20, "constants: TLV_SSL")
t.is(np.V2_MAX_LEN, 65551, "constants: V2_MAX_LEN")
t.is(type(np.VERSION), "string", "VERSION")
local leaked = {}
for k in pairs(_G) do
	if not globals_before[k] and k ~= "package" then leaked[#leaked + 1] = k end
end
t.is(#leaked, 0, "require sets no global: " .. table.concat(leaked, ", "))
t.is(package.loaded.netproxy, np, "one module table, in package.loaded")
t.is(require "netproxy", np, "a second require gives the same table")

-- --- parse -----------------------------------------------------------------

local v1 = "PROXY TCP4 192.0.2.7 198.51.100.1 50000 5222\r\n"
local h, n = np.parse(v1 .. "<stream>")
t.is(n, #v1, "v1: the header length, not the data after it")
t.is(h.version, 1, "v1: version")
t.is(h.command, "PROXY", "v1: command")
t.is(h.family, "INET", "v1: family")
t.is(h.transport, "STREAM", "v1: transport")
t.is(h.v1, "TCP4", "v1: protocol word")
t.is(h.src_addr, "192.0.2.7", "v1: src_addr")
t.is(h.src_port, 50000, "v1: src_port")
t.is(h.dst_addr, "198.51.100.1", "v1: dst_addr")
t.is(h.dst_port, 5222, "v1: dst_port")
t.is(h.tlv, "", "v1: no TLVs")

h, n = np.parse("PROXY TCP6 2001:DB8::7 ::1 65535 0\r\n")
t.is(h and h.src_addr, "2001:db8::7", "v1 TCP6: the address as RFC 5952 text")
t.is(h and h.src_port, 65535, "v1: port 65535 taken")
t.is(h and h.dst_port, 0, "v1: port 0 taken")

h, n = np.parse("PROXY UNKNOWN\r\nX")
t.is(n, 15, "v1 UNKNOWN: taken")
t.is(h.v1, "UNKNOWN", "v1 UNKNOWN: the word")
t.is(h.family, "UNSPEC", "v1 UNKNOWN: family UNSPEC")
t.is(h.src_addr, nil, "v1 UNKNOWN: no addresses")

local function refused(bytes, code, name, max)
	local r, reason, got = np.parse(bytes, max)
	t.ok(r == nil and type(reason) == "string" and #reason > 0 and got == code,
		name .. ": nil, reason, " .. code .. " (" .. tostring(got) .. ")")
end
refused("PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n", "NP_EADDRESS", "v1 TCP4 with an IPv6 address")
refused("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "NP_EADDRESS", "v1 with a zone id")
refused("PROXY TCP4 192.0.2.01 192.0.2.1 1 2\r\n", "NP_EADDRESS", "v1 with a leading zero in an octet")
refused("PROXY TCP4 192.0.2.1 192.0.2.1 01 2\r\n", "NP_EPORT", "v1 with a leading zero in a port")
refused("PROXY TCP4 192.0.2.1 192.0.2.1 65536 2\r\n", "NP_EPORT", "v1 port 65536")
refused("PROXY TCP4 192.0.2.1" .. (" "):rep(100), "NP_ETOOLONG", "v1 without CRLF in 107 bytes")
refused("GET / HTTP/1.0\r\n", "NP_ENOTPROXY", "HTTP")
refused("<?xml version='1.0'?>", "NP_ENOTPROXY", "XML")
refused(v1, "NP_ETOOBIG", "v1 over the cap", 20)

-- Every proper prefix asks for more.
local prefixes_ok = true
for i = 0, #v1 - 1 do
	local r, _, code = np.parse(v1:sub(1, i))
	prefixes_ok = prefixes_ok and r == nil and code == "NP_EAGAIN"
end
t.ok(prefixes_ok, "v1: every proper prefix is NP_EAGAIN")

-- v2, built by hand: binary bytes with NULs in them.
local SIG = "\r\n\r\n\0\r\nQUIT\n"
local function be16(v) return string.char(v >> 8, v & 0xff) end
local function v2(cmd_fam, body) return SIG .. cmd_fam .. be16(#body) .. body end
local inet = v2("\x21\x11", "\192\0\2\7" .. "\198\51\100\1" .. be16(50000) .. be16(5222)
	.. "\2" .. be16(4) .. "host")
h, n = np.parse(inet .. "DATA")
t.is(n, #inet, "v2 INET: the header length")
t.is(h.version, 2, "v2: version")
t.is(h.src_addr, "192.0.2.7", "v2: src_addr")
t.is(h.src_port, 50000, "v2: src_port")
t.is(h.dst_port, 5222, "v2: dst_port")
t.is(h.tlv, "\2\0\4host", "v2: the TLV area, bytes as sent")
t.is(h.v1, nil, "v2: no v1 word")

local prefixes_ok2 = true
for i = 0, #inet - 1 do
	local r, _, code = np.parse(inet:sub(1, i))
	prefixes_ok2 = prefixes_ok2 and r == nil and code == "NP_EAGAIN"
end
t.ok(prefixes_ok2, "v2: every proper prefix is NP_EAGAIN")

local ip6 = ("\0"):rep(15) .. "\1"
h, n = np.parse(v2("\x21\x21", ("\32\1\13\184" .. ("\0"):rep(11) .. "\5") .. ip6 .. be16(1) .. be16(2)))
t.is(h and h.src_addr, "2001:db8::5", "v2 INET6: src_addr")
t.is(h and h.dst_addr, "::1", "v2 INET6: dst_addr")

local path = "/run/x.sock" .. ("\0"):rep(108 - 11)
h = np.parse(v2("\x21\x31", path .. path))
t.is(h and h.family, "UNIX", "v2 UNIX: family")
t.is(h and h.src_addr, "/run/x.sock", "v2 UNIX: the path up to its NUL")
t.is(h and h.src_port, nil, "v2 UNIX: no port")

h, n = np.parse(v2("\x20\x00", "\4\0\2xx") .. "HELLO")
t.is(n, 16 + 5, "v2 LOCAL with a TLV: the whole header, TLVs included")
t.is(h.command, "LOCAL", "v2 LOCAL: command")
t.is(h.src_addr, nil, "v2 LOCAL: no addresses")
h = np.parse(v2("\x21\x00", ""))
t.is(h and h.family, "UNSPEC", "v2 PROXY UNSPEC: taken, no addresses")
h = np.parse(v2("\x21\x12", ("\0"):rep(12)))
t.is(h and h.transport, "DGRAM", "v2 INET DGRAM: transport")

refused(v2("\x21\x11", "\192\0\2\7"), "NP_ESHORT", "v2 length short of the address block")
refused(SIG .. "\x31\x11" .. be16(12), "NP_EVERSION", "v2 version 3")
refused(SIG .. "\x22\x11" .. be16(12), "NP_ECOMMAND", "v2 command 2")
refused(SIG .. "\x21\x41" .. be16(12), "NP_EFAMILY", "v2 family 4")
refused(SIG .. "\x21\x13" .. be16(12), "NP_ETRANSPORT", "v2 transport 3")
refused(SIG .. "\x21\x11" .. be16(4000), "NP_ETOOBIG", "v2 announcing more than the cap", 4096 - 100)
refused(v2("\x21\x11", ("\0"):rep(12) .. "\2\0\9ab"), "NP_ETLV", "v2 with a TLV running past the end")

t.ok(not pcall(np.parse), "parse(): no argument is a Lua error")
t.ok(not pcall(np.parse, "x", 0), "parse(bytes, 0): a cap of 0 is a Lua error")
t.ok(not pcall(np.parse, "x", 65552), "parse(bytes, 65552): over the largest header is a Lua error")

-- --- TLVs ------------------------------------------------------------------

local area = "\1\0\2h2" .. "\2\0\11example.org" .. "\5\0\0"
local seen = {}
for ty, val in np.tlvs(area) do seen[#seen + 1] = ty .. "=" .. val end
t.is(table.concat(seen, ","), "1=h2,2=example.org,5=", "tlvs: each type and value in order")
local count = 0
for _ in np.tlvs("") do count = count + 1 end
t.is(count, 0, "tlvs(\"\"): nothing")
local list = np.tlv_list(area)
t.is(#list, 3, "tlv_list: three TLVs")
t.is(list[2].type, 2, "tlv_list: type")
t.is(list[2].value, "example.org", "tlv_list: value")
local r, reason, code = np.tlv_list("\1\0\9ab")
t.ok(r == nil and code == "NP_ETLV" and reason, "tlv_list of a malformed area: nil, reason, NP_ETLV")
t.is(np.tlv_find(area, np.TLV_AUTHORITY), "example.org", "tlv_find: present")
t.is(np.tlv_find(area, np.TLV_UNIQUE_ID), "", "tlv_find: present and empty")
t.is(np.tlv_find(area, np.TLV_SSL), false, "tlv_find: absent is false")
r, reason, code = np.tlv_find("\1\0\9ab", 0x20)
t.ok(r == nil and code == "NP_ETLV", "tlv_find in a malformed area: nil, reason, NP_ETLV")
t.ok(not pcall(np.tlv_find, area, 256), "tlv_find(area, 256): a Lua error")

-- An SSL TLV: client 0x07, verify 0, sub-TLVs VERSION and CN.
local ssl_value = "\7\0\0\0\0" .. "\x21\0\7TLSv1.3" .. "\x22\0\11client.test"
local s = np.ssl(ssl_value)
t.is(s.client, 7, "ssl: client bits")
t.is(s.verify, 0, "ssl: verify")
t.is(s.verified, true, "ssl: verified (certificate presented, verify 0)")
t.is(s.version, "TLSv1.3", "ssl: VERSION sub-TLV")
t.is(s.cn, "client.test", "ssl: CN sub-TLV")
t.is(np.tlv_find(s.sub, 0x22), "client.test", "ssl: the sub-TLV area for tlv_find")
s = np.ssl("\1\0\0\0\0")
t.is(s and s.verified, false, "ssl: no certificate presented is not verified")
r, reason, code = np.ssl("\1\0\0")
t.ok(r == nil and code == "NP_ETLVVALUE", "ssl of a short value: nil, reason, NP_ETLVVALUE")

-- --- builders --------------------------------------------------------------

local b = np.build_v1 { family = "INET", src_addr = "192.0.2.7", src_port = 50000,
	dst_addr = "198.51.100.1", dst_port = 5222 }
t.is(b, v1, "build_v1: a TCP4 line")
t.is(np.build_v1 { command = "LOCAL" }, "PROXY UNKNOWN\r\n", "build_v1 LOCAL: UNKNOWN")
b = np.build_v2({ family = "INET6", src_addr = "2001:db8::5", src_port = 1,
	dst_addr = "::1", dst_port = 2 }, { { np.TLV_AUTHORITY, "xmpp.test" },
	{ type = np.TLV_NOOP, value = "\0\0" } }, true)
h, n = np.parse(b)
t.is(n, #b, "build_v2: parses back whole")
t.is(h.src_addr, "2001:db8::5", "build_v2: src_addr back")
t.is(np.tlv_find(h.tlv, np.TLV_AUTHORITY), "xmpp.test", "build_v2: TLV back")
t.is(#np.tlv_find(h.tlv, np.TLV_CRC32C), 4, "build_v2 with crc32c: a checksum TLV, checked by parse")
local corrupt = b:sub(1, -2) .. string.char(b:byte(-1) ~ 1)
refused(corrupt, "NP_ECRC", "build_v2's checksum catches a flipped bit")
b = np.build_v2 { command = "LOCAL" }
t.is(#b, 16, "build_v2 LOCAL: 16 bytes")
local big = np.build_v2({ family = "UNSPEC" }, { { np.TLV_NOOP, ("x"):rep(65535 - 3) } })
t.is(big and #big, 65551, "build_v2: the largest header")
t.is(select(2, np.parse(big)), 65551, "parse: the largest header")
r, reason, code = np.build_v2 { family = "INET", src_addr = "::1", src_port = 1, dst_addr = "::1", dst_port = 1 }
t.ok(r == nil and code == "NP_EADDRESS", "build_v2: an IPv6 address for INET is NP_EADDRESS")
r, reason, code = np.build_v2 { family = "INET", src_addr = "1.2.3.4", src_port = 70000,
	dst_addr = "1.2.3.4", dst_port = 1 }
t.ok(r == nil and code == "NP_EPORT", "build_v2: port 70000 is NP_EPORT")
r, reason, code = np.build_v2 { family = "IPX" }
t.ok(r == nil and code == "NP_EFAMILY", "build_v2: an unknown family is NP_EFAMILY")
t.ok(not pcall(np.build_v2, {}, { { 300, "x" } }), "build_v2: a TLV type of 300 is a Lua error")
t.ok(not pcall(np.build_v2, {}, { { 1, 2 } }), "build_v2: a TLV value that is not a string is a Lua error")

-- --- CIDR blocks -----------------------------------------------------------

local c = np.cidr("192.0.2.0/24")
t.is(tostring(c), "192.0.2.0/24", "cidr: tostring")
t.is(c:match("192.0.2.200"), true, "cidr: an address inside")
t.is(c:match("192.0.3.1"), false, "cidr: an address outside")
t.is(c:match("::ffff:192.0.2.9"), true, "cidr: an IPv4 block matches a v4-mapped peer")
t.is(np.cidr_match(c, "192.0.2.1"), true, "cidr_match(block, address)")
t.is(tostring(np.cidr("10.1.2.3/8")), "10.0.0.0/8", "cidr: host bits cleared")
local h1 = np.cidr("::1")
t.is(h1:match("::1"), true, "cidr ::1: itself")
t.is(h1:match("127.0.0.1"), false, "cidr ::1: not IPv4 loopback")
t.is(np.cidr("2001:db8::/32"):match("2001:db8:ffff::1"), true, "cidr: an IPv6 block")
r, reason, code = c:match("not an address")
t.ok(r == nil and code == "NP_EADDRESS", "cidr: matching a non-address is nil, reason, NP_EADDRESS")
for text, want in pairs { ["1.2.3.4/33"] = "NP_EINVAL", ["1.2.3"] = "NP_EADDRESS",
		["::ffff:1.2.3.0/120"] = "NP_EFAMILY", ["01.2.3.4"] = "NP_EADDRESS", [""] = "NP_EADDRESS" } do
	r, reason, code = np.cidr(text)
	t.ok(r == nil and code == want and reason, ("cidr(%q): nil, reason, %s"):format(text, want))
end
t.ok(not pcall(c.match, {}, "1.2.3.4"), "match on something that is not a block is a Lua error")

t.is(select(2, np.strerror(-19)), "NP_ECLOSED", "strerror: the name")
t.is((np.strerror(-19)), "connection closed before the header was complete", "strerror: the sentence")

-- --- the exact read on a socket ---------------------------------------------

local ok_socket, socket = pcall(require, "socket")
if not ok_socket then
	t.ok(false, "LuaSocket (Debian package lua-socket) for the socket tests")
	t.done()
end

local server = assert(socket.bind("127.0.0.1", 0))
local sip, sport = server:getsockname()

local function pair()
	local cli = assert(socket.connect(sip, sport))
	cli:setoption("tcp-nodelay", true)
	server:settimeout(2)
	local srv = assert(server:accept())
	return cli, srv
end

-- Wait (bounded) until fd's header attempt stops saying NP_EAGAIN.
local function attempt_until(fd, max, seconds)
	local deadline = socket.gettime() + (seconds or 2)
	repeat
		local a, b2, c2 = np.try_recv(fd, max)
		if a or c2 ~= "NP_EAGAIN" then return a, b2, c2 end
		socket.sleep(0.005)
	until socket.gettime() > deadline
	return nil, "still incomplete", "NP_EAGAIN"
end

local cli, srv = pair()
local fd = srv:getfd()
cli:send(inet:sub(1, 10))
socket.sleep(0.05)
r, reason, code = np.try_recv(fd)
t.is(code, "NP_EAGAIN", "try_recv: 10 bytes of a header: NP_EAGAIN")
local readable = socket.select({ srv }, nil, 0.05)
t.is(#readable, 0, "try_recv: the socket is not reported readable for the bytes already seen")
cli:send(inet:sub(11) .. "HELLO")
readable = socket.select({ srv }, nil, 2)
t.is(#readable, 1, "try_recv: readable again once the rest arrives")
h, n = attempt_until(fd)
t.is(n, #inet, "try_recv: the header's length")
t.is(h and h.src_addr, "192.0.2.7", "try_recv: the client")
t.is(h and np.tlv_find(h.tlv, 2), "host", "try_recv: the TLV")
srv:settimeout(2)
t.is(srv:receive(5), "HELLO", "try_recv: then exactly the application data")
cli:close()
srv:close()

cli, srv = pair()
cli:send(v1:sub(1, 20))
socket.sleep(0.05)
cli:shutdown("send")
r, reason, code = attempt_until(srv:getfd())
t.is(code, "NP_ECLOSED", "try_recv: EOF mid-header is NP_ECLOSED")
cli:close()
srv:close()

cli, srv = pair()
cli:send(v1 .. "X")
socket.sleep(0.05)
r, reason, code = attempt_until(srv:getfd(), 40)
t.is(code, "NP_ETOOBIG", "try_recv: a cap smaller than the header is NP_ETOOBIG")
h, n = attempt_until(srv:getfd(), 107)
t.is(n, #v1, "try_recv: nothing was consumed by the refusal; a larger cap takes it")
t.is(srv:receive(1), "X", "try_recv: and the data after it is intact")
cli:close()
srv:close()

cli, srv = pair()
cli:send("<?xml version='1.0'?>")
socket.sleep(0.05)
r, reason, code = attempt_until(srv:getfd())
t.is(code, "NP_ENOTPROXY", "try_recv: XML is NP_ENOTPROXY")
cli:close()
srv:close()

-- A header over 4096 bytes: the binding's buffer grows with the cap.
local huge = np.build_v2({ family = "INET", src_addr = "192.0.2.9", src_port = 9, dst_addr = "192.0.2.1",
	dst_port = 1 }, { { np.TLV_NOOP, ("n"):rep(20000) } })
cli, srv = pair()
cli:send(huge .. "Z")
socket.sleep(0.05)
r, reason, code = attempt_until(srv:getfd())
t.is(code, "NP_ETOOBIG", "try_recv: a 20 KiB header over the default cap of 4096")
h, n = attempt_until(srv:getfd(), 65551)
t.is(n, #huge, "try_recv: taken with a cap of 65551")
t.is(srv:receive(1), "Z", "try_recv: then the data")
cli:close()
srv:close()

r, reason, code = np.try_recv(1000000)
t.ok(r == nil and code == "NP_ESYS" and reason:find("Bad file descriptor", 1, true),
	"try_recv on a bad descriptor: nil, reason with strerror, NP_ESYS")
t.ok(not pcall(np.try_recv, -1), "try_recv(-1) is a Lua error")

-- The stack stays balanced over many calls (an unbalanced C function would
-- overflow Lua's stack long before this ends).
local fine = true
for _ = 1, 20000 do
	fine = fine and np.parse(inet) ~= nil and np.build_v2({ command = "LOCAL" }) ~= nil
		and c:match("192.0.2.1") and np.tlv_find(area, 2) == "example.org"
end
t.ok(fine, "20000 rounds of parse, build, match and find")

t.done()
