-- prosody_parse.lua - what a PROXY header costs in Lua: the original
-- mod_net_proxy's own parser against libnetproxy through the binding.
--
--   lua5.4 bench/prosody_parse.lua ORIGINAL_MODULE_FILE
--
-- (make bench-prosody runs it, with LUA_CPATH_5_4 pointing at the build.)
--
-- The original module runs here outside Prosody, in an environment of stubs:
-- a `module` object that logs nothing, a portmanager that knows one service
-- whose listener does nothing, and connection objects that answer ip(),
-- port() and serverport(). Its cost is measured from the bytes to the
-- hand-over: onconnect, onincoming(header .. stream) (signature detection,
-- the version's handler, the proxy_data object, wrap_proxy_connection with
-- its closures and setlistener) and ondisconnect. Prosody's own util.*
-- libraries come from /usr/lib/prosody, as in Prosody.
--
-- Ours is measured twice: netproxy.parse() on the same bytes (the C parser
-- and the result table), and what the module does for real per header,
-- netproxy.try_recv() on a TCP socket that holds the header (peek, parse,
-- consume exactly the header, SO_RCVLOWAT back to 1), against a plain
-- LuaSocket receive of as many bytes as the baseline.
--
-- Prints one line per case: name, ns per header (median of RUNS runs).

local original_path = assert(arg[1], "usage: lua5.4 prosody_parse.lua ORIGINAL_MODULE_FILE")
package.path = "/usr/lib/prosody/?.lua;" .. package.path
package.cpath = package.cpath .. ";/usr/lib/prosody/?.so"

local np = require "netproxy"
local socket = require "socket"
local clock = os.clock

local RUNS = 7
local RUN_SECONDS = 0.25

local STREAM = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
	.. "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
local V1 = "PROXY TCP4 203.0.113.7 192.0.2.1 50000 15222\r\n"
local V1_6 = "PROXY TCP6 2001:db8::7 2001:db8::1 50000 15222\r\n"
local V2 = assert(np.build_v2 { family = "INET", src_addr = "203.0.113.7", src_port = 50000,
	dst_addr = "192.0.2.1", dst_port = 15222 })
local V2_6 = assert(np.build_v2 { family = "INET6", src_addr = "2001:db8::7", src_port = 50000,
	dst_addr = "2001:db8::1", dst_port = 15222 })

-- The median ns per call of f over RUNS runs, each about RUN_SECONDS of CPU.
local function measure(f)
	local n = 1
	while true do
		local t0 = clock()
		for _ = 1, n do f() end
		if clock() - t0 > RUN_SECONDS / 10 then break end
		n = n * 2
	end
	n = n * 10
	local results = {}
	for r = 1, RUNS do
		local t0 = clock()
		for _ = 1, n do f() end
		results[r] = (clock() - t0) / n * 1e9
	end
	table.sort(results)
	return results[(RUNS + 1) // 2]
end

-- --- the original, in stubs -------------------------------------------------------

local noop = function() end
local service_listener = { onconnect = noop, onincoming = noop }
package.loaded["core.portmanager"] = {
	get_service = function() return { listener = service_listener } end,
}
local provided
local module_stub = {
	set_global = noop,
	log = noop,
	get_option_set = function(_, name)
		if name == "proxy_ports" then
			return require "util.set".new { 15222 }
		end
	end,
	get_option = function(_, name, default)
		if name == "proxy_port_mappings" then return { [15222] = "c2s" } end
		return default
	end,
	provides = function(_, _, item) provided = item end,
}
local env = setmetatable({ module = module_stub }, { __index = _G })
local chunk = assert(loadfile(original_path, "t", env))
chunk()
local listener = assert(provided and provided.listener, "the original registered no listener")

local conn_mt = { __index = {
	ip = function() return "127.0.0.1" end,
	port = function() return 40000 end,
	-- A number, as the original expects; Debian 12's LuaSocket gives text,
	-- which the original cannot map (see bench/README.md).
	serverport = function() return 15222 end,
	setlistener = noop,
	close = noop,
	socket = function()
		return { getpeername = function() return "127.0.0.1", 40000 end,
			getsockname = function() return "127.0.0.1", 15222 end }
	end,
} }

local function original(data)
	return function()
		local conn = setmetatable({}, conn_mt)
		listener.onconnect(conn)
		listener.onincoming(conn, data)
		listener.ondisconnect(conn)
	end
end

-- The original really parses and hands over, or the timing means nothing.
do
	local seen
	service_listener.onincoming = function(conn, rest) seen = { conn:ip(), conn:port(), rest } end
	for _, h in ipairs { V1, V1_6, V2, V2_6 } do
		seen = nil
		original(h .. STREAM)()
		assert(seen and seen[3] == STREAM, "the original did not hand the stream over")
		assert(seen[1] == "203.0.113.7" or seen[1] == "2001:db8::7", seen[1])
	end
	service_listener.onincoming = noop
end

-- --- ours ----------------------------------------------------------------------

local function ours_parse(data)
	return function()
		local hdr, n = np.parse(data)
		local _ = hdr.src_addr, data:sub(n + 1)
	end
end

local server = assert(socket.bind("127.0.0.1", 0))
local cli = assert(socket.tcp())
assert(cli:connect(server:getsockname()))
cli:setoption("tcp-nodelay", true)
local srv = assert(server:accept())
srv:settimeout(1)
local fd = srv:getfd()

local function ours_try_recv(data)
	return function()
		cli:send(data)
		local hdr, n = np.try_recv(fd)
		while not hdr and n == nil do -- not arrived yet (loopback is near instant)
			hdr, n = np.try_recv(fd)
		end
		assert(hdr, n)
	end
end

local function plain_receive(data)
	local len = #data
	return function()
		cli:send(data)
		assert(srv:receive(len))
	end
end

-- --- the table ----------------------------------------------------------------------

local cases = {
	{ "v1 TCP4", V1 }, { "v1 TCP6", V1_6 }, { "v2 TCP4", V2 }, { "v2 TCP6", V2_6 },
}
for _, c in ipairs(cases) do
	local name, h = c[1], c[2]
	print(("%s\toriginal (Lua, to the hand-over)\t%.0f"):format(name, measure(original(h .. STREAM))))
	print(("%s\tnetproxy.parse (C via the binding)\t%.0f"):format(name, measure(ours_parse(h .. STREAM))))
	print(("%s\tsend + netproxy.try_recv (socket)\t%.0f"):format(name, measure(ours_try_recv(h))))
	print(("%s\tsend + LuaSocket receive (baseline)\t%.0f"):format(name, measure(plain_receive(h))))
end
