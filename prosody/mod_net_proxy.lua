-- mod_net_proxy.lua - the PROXY protocol, versions 1 and 2, for Prosody's
-- services, on libnetproxy (netproxy(8)'s project: libnetproxy(3),
-- netproxy.lua(3)).
--
-- A drop-in for the community module of the same name: the same keys, read
-- the same way, and the same listener, the "proxy" network service on the
-- ports proxy_port_mappings names. What differs is how a header is read.
--
-- Prosody's epoll backend (net/server_epoll.lua), when it accepts a
-- connection on a plain listener, calls the listener's onconnect and at once
-- the connection's onreadable, which reads up to read_size bytes and hands
-- them to onincoming: whatever it reads is gone from the socket. So the
-- module's onconnect, which runs first, checks the sender against
-- proxy_trusted_proxies before a byte is read, arms the header deadline and
-- replaces onreadable on that one connection object (a field of the object
-- shadows the method of its metatable). That onreadable asks the binding for
-- exactly the header, with np_try_recv_header(): it consumes the header's
-- bytes and nothing else, or nothing at all while the header is incomplete
-- (and TCP then stays quiet until more bytes arrive, so the level-triggered
-- loop does not spin). Once the header is in, the connection is given to the
-- mapped service's listener with the client's address: its onconnect runs,
-- and Prosody's own onreadable reads the application's first byte from the
-- socket. For a direct-TLS service, Prosody starts its own TLS handshake
-- instead, with that service's certificate, and the service's onconnect runs
-- when the handshake is done, exactly as on the service's own ports.
--
-- All parsing, size limits, address text and the meaning of a trusted-sender
-- list are libnetproxy's. This file holds configuration, logging and the
-- hand-over. Nothing here blocks, and no rejection raises an error: each is
-- one log line and a closed connection.

module:set_global();

local ok_np, np = pcall(require, "netproxy");
if not ok_np then
	-- A missing binding is an installation error: say what to install where.
	error("mod_net_proxy needs the Lua 5.4 module 'netproxy' (netproxy.so, from netproxy's "
		.. "make install, in a directory of package.cpath): " .. tostring(np), 0);
end

local portmanager = require "core.portmanager";
local certmanager = require "core.certmanager";
local configmanager = require "core.configmanager";

local pairs, ipairs, type, tostring, tonumber = pairs, ipairs, type, tostring, tonumber;
local xpcall, traceback = xpcall, debug.traceback;

local DEFAULT_TRUSTED = { "127.0.0.1", "::1" };
local DEFAULT_TIMEOUT = 5;
local DEFAULT_MAX_HEADER = 4096;
local MIN_MAX_HEADER = 16; -- the fixed part of a v2 header

-- The settings, read at load and again on every config reload.
local mappings = {};        -- port -> service name
local trusted = {};         -- list of netproxy CIDR blocks; empty: anyone
local trust_anyone = false;
local header_timeout = DEFAULT_TIMEOUT;
local max_header = DEFAULT_MAX_HEADER;
local secure_in, secure_out = false, false;
local proxy_out = nil;      -- { addr = , port = , family = "tcp4" | "tcp6" } or nil

-- Connections whose header is still awaited: closed if the module goes.
local pending = setmetatable({}, { __mode = "k" });

-- TLS contexts for direct-TLS mappings, by proxy port: { ctx = , hosts = , service = }.
local tls_by_port = {};

-- Warnings about a mapping, each said once per load or reload.
local warned = {};

local function warn_once(key, ...)
	if not warned[key] then
		warned[key] = true;
		module:log("warn", ...);
	end
end

--- Configuration -------------------------------------------------------------

local function read_mappings()
	local raw = module:get_option("proxy_port_mappings", {});
	local out = {};
	if type(raw) ~= "table" then
		module:log("error", "proxy_port_mappings must be a table such as { [15222] = \"c2s\" }: ignored");
		return out;
	end
	for port, name in pairs(raw) do
		local n = tonumber(port);
		if not n or n < 1 or n > 65535 or n % 1 ~= 0 then
			module:log("error", "proxy_port_mappings: %s is not a port number: ignored", tostring(port));
		elseif type(name) ~= "string" then
			module:log("error", "proxy_port_mappings[%d]: the service name must be a string: ignored", n);
		else
			out[n] = name;
		end
	end
	return out;
end

local function read_trusted()
	local list = module:get_option_array("proxy_trusted_proxies", DEFAULT_TRUSTED);
	local blocks, bad = {}, 0;
	for _, text in ipairs(list) do
		local block, reason = np.cidr(tostring(text));
		if block then
			blocks[#blocks + 1] = block;
		else
			bad = bad + 1;
			module:log("error", "proxy_trusted_proxies: %q is not an address or block (%s): ignored",
				tostring(text), reason);
		end
	end
	if #list == 0 then
		module:log("warn", "proxy_trusted_proxies is empty: ANY host that reaches the proxy ports "
			.. "can send PROXY headers and claim any client address");
		return blocks, true;
	end
	if #blocks == 0 then
		module:log("error", "proxy_trusted_proxies has no valid entry: every connection to the "
			.. "proxy ports will be refused");
	end
	return blocks, false;
end

-- "192.0.2.10:15270", "[2001:db8::10]:15270", or { "192.0.2.10", 15270 }.
local function read_proxy_out()
	local raw = module:get_option("proxy_out");
	if raw == nil or raw == false then return nil; end
	local addr, port;
	if type(raw) == "table" then
		addr, port = raw[1], tonumber(raw[2]);
	elseif type(raw) == "string" then
		addr, port = raw:match("^%[([^%]]+)%]:(%d+)$");
		if not addr then addr, port = raw:match("^([^:]+):(%d+)$"); end
		port = tonumber(port);
	end
	local block = type(addr) == "string" and not addr:find("/", 1, true) and np.cidr(addr);
	if not block or not port or port < 1 or port > 65535 then
		module:log("error", "proxy_out must be an address and a port, such as \"192.0.2.10:15270\": "
			.. "ignored, outgoing s2s connects as usual");
		return nil;
	end
	return { addr = addr, port = port, family = addr:find(":", 1, true) and "tcp6" or "tcp4" };
end

local function read_options()
	mappings = read_mappings();
	trusted, trust_anyone = read_trusted();
	header_timeout = module:get_option_number("proxy_header_timeout", DEFAULT_TIMEOUT);
	if not header_timeout or header_timeout <= 0 then
		module:log("error", "proxy_header_timeout must be a number of seconds above 0: using %d",
			DEFAULT_TIMEOUT);
		header_timeout = DEFAULT_TIMEOUT;
	end
	max_header = module:get_option_number("proxy_max_header", DEFAULT_MAX_HEADER);
	if not max_header or max_header % 1 ~= 0 or max_header < MIN_MAX_HEADER
			or max_header > np.V2_MAX_LEN then
		module:log("error", "proxy_max_header must be a whole number of bytes from %d to %d: using %d",
			MIN_MAX_HEADER, np.V2_MAX_LEN, DEFAULT_MAX_HEADER);
		max_header = DEFAULT_MAX_HEADER;
	end
	local secure = module:get_option_boolean("proxy_secure", false);
	secure_in = module:get_option_boolean("proxy_secure_in", secure);
	secure_out = module:get_option_boolean("proxy_secure_out", secure);
	proxy_out = read_proxy_out();
end

read_options();

-- The ports the "proxy" service listens on: proxy_ports when set (the
-- community module's key, which portmanager reads for the service), else
-- every mapped port.
local function mapped_ports()
	local ports = {};
	for port in pairs(mappings) do ports[#ports + 1] = port; end
	table.sort(ports);
	return ports;
end

--- Direct TLS ------------------------------------------------------------------

-- A server context for a direct-TLS service reached through the proxy port,
-- made as core.portmanager makes one for the service's own ports: the
-- service's certificate ("<service> port <n>" finds it), its <prefix>ssl
-- options and its ssl_config; and the per-host contexts that SNI selects.
local function make_tls(service, port)
	local prefix = (service.config_prefix or service.name) .. "_";
	local global_ssl = configmanager.get("*", "ssl") or {};
	local prefix_ssl = configmanager.get("*", prefix .. "ssl") or global_ssl;
	local ctx, err, cfg = certmanager.create_context(service.name .. " port " .. port, "server",
		prefix_ssl[port], prefix_ssl, service.ssl_config or {}, global_ssl[port]);
	if not ctx then
		return nil, err;
	end
	local hosts = {};
	for host in pairs(prosody.hosts) do
		local alternate = configmanager.get(host, service.name .. "_host");
		local autocert = certmanager.find_host_cert(alternate or host);
		local host_ctx = certmanager.create_context(host, "server",
			configmanager.get(host, prefix .. "ssl"), autocert, cfg);
		if host_ctx then
			hosts[alternate or host] = host_ctx;
		end
	end
	return { ctx = ctx, hosts = hosts, service = service };
end

-- The context for a proxy port, made the first time and after each reload.
local function tls_for(port, service)
	local entry = tls_by_port[port];
	if entry and entry.service == service then
		return entry;
	end
	local made, err = make_tls(service, port);
	if not made then
		return nil, err;
	end
	tls_by_port[port] = made;
	return made;
end

--- Checking the mappings -----------------------------------------------------------

-- Said once after start (and after each reload), when every module has had
-- its chance to provide its services: a port nothing is mapped to, a service
-- Prosody does not have. Neither stops Prosody; such connections are closed
-- after their header, one log line each.
local function check_mappings()
	for port in module:get_option_set("proxy_ports", {}) do
		local n = tonumber(port);
		if n and not mappings[n] then
			warn_once("unmapped " .. n, "Port %d is in proxy_ports but has no proxy_port_mappings entry: "
				.. "its connections will be closed after their PROXY header", n);
		end
	end
	for port, name in pairs(mappings) do
		local service = portmanager.get_service(name);
		if not service then
			warn_once("service " .. port, "proxy_port_mappings[%d] = %q, a service Prosody does not have "
				.. "(is its module loaded?): its connections will be closed after their PROXY header",
				port, name);
		elseif service.encryption == "ssl" then
			local entry, err = tls_for(port, service);
			if not entry then
				warn_once("tls " .. port, "proxy_port_mappings[%d] = %q: no TLS context for it (%s): "
					.. "its connections will be closed after their PROXY header", port, name,
					tostring(err));
			end
		end
	end
end

--- Connections ------------------------------------------------------------------

local listener = {};

-- One line for a connection that ends here, at the level given: the proxy
-- (the peer) and the PROXY port, then why.
local function refuse(conn, level, what, ...)
	pending[conn] = nil;
	module:log(level, "Closed %s port %s on PROXY port %s: " .. what, tostring(conn.peername or "?"),
		tostring(conn.peerport or "?"), tostring(conn:serverport()), ...);
	conn:close();
end

local function is_trusted(ip)
	if trust_anyone then return true; end
	for i = 1, #trusted do
		if trusted[i]:match(ip) then return true; end
	end
	return false;
end

-- A v4-mapped IPv6 address as IPv4, the text Prosody shows for IPv4 clients.
local function unmap(addr)
	local hi, lo = addr:match("^::ffff:(%x+):(%x+)$");
	if not hi then return addr; end
	hi, lo = tonumber(hi, 16), tonumber(lo, 16);
	-- Arithmetic, not Lua 5.3's operators: on an older Lua this file must
	-- still load far enough to say that the binding is missing.
	return ("%d.%d.%d.%d"):format(math.floor(hi / 256), hi % 256, math.floor(lo / 256), lo % 256);
end

-- server_epoll's onconnect and inittls read the socket's own peer into
-- peername; after the hand-over the names are the header's and stay so.
local function keep_names() end

-- The session a service's onconnect made for conn, for proxy_secure_in.
local function session_of(service, conn)
	local by = service._provided_by;
	return by and module:shared("/*/" .. by .. "/sessions")[conn];
end

local function hand_over(conn, hdr)
	local port = tonumber(conn:serverport()); -- LuaSocket's getsockname gives text
	local name = mappings[port];
	local service = name and portmanager.get_service(name);
	local proxy_ip, proxy_port = conn:ip(), conn:port();

	-- LOCAL, v1 UNKNOWN, UNSPEC and UNIX (no address a session could show):
	-- the connection's own endpoints stand.
	local client_ip, client_port = proxy_ip, proxy_port;
	local kind = hdr.v1 or hdr.command;
	if hdr.src_addr and hdr.src_port then -- PROXY over INET or INET6
		client_ip, client_port = unmap(hdr.src_addr), hdr.src_port;
	elseif hdr.command == "PROXY" and hdr.version == 2 then
		kind = "PROXY " .. hdr.family;
	end

	if not name then
		return refuse(conn, "info", "port %d has no proxy_port_mappings entry (client %s port %d)",
			port, client_ip, client_port);
	elseif not service then
		return refuse(conn, "info", "proxy_port_mappings[%d] = %q is not a service Prosody has "
			.. "(client %s port %d)", port, name, client_ip, client_port);
	end
	local tls;
	if service.encryption == "ssl" then
		local err;
		tls, err = tls_for(port, service);
		if not tls then
			return refuse(conn, "warn", "no TLS context for %s (%s)", name, tostring(err));
		end
	end

	pending[conn] = nil;
	module:log("info", "Client %s port %d via %s port %d (PROXY v%d %s) to %s", client_ip,
		client_port, proxy_ip, proxy_port, hdr.version, kind, name);

	conn.peername, conn.peerport = client_ip, client_port;
	conn.proxy_ip, conn.proxy_port = proxy_ip, proxy_port;
	conn.updatenames = keep_names;
	conn.onreadable = nil; -- server_epoll's own again
	conn:setlistener(service.listener);

	if tls then
		-- As on the service's own port: TLS first, then its onconnect.
		conn.onconnect = nil;
		if conn._server then conn._server.hosts = tls.hosts; end
		conn:inittls(tls.ctx, true);
		return;
	end
	conn:setreadtimeout(); -- the backend's read timeout instead of the header deadline
	conn:on("connect");
	if secure_in then
		local session = session_of(service, conn);
		if session then
			-- The proxy terminated TLS: the session is secure, and STARTTLS
			-- inside it would be TLS twice. Not "encrypted": that says this
			-- socket speaks TLS, and Prosody would ask it about its session.
			session.secure = true;
			conn.starttls = false;
		end
	end
end

local function read_header(conn)
	local fd = conn:getfd();
	if fd < 0 then return; end
	local hdr, n, code = np.try_recv(fd, max_header);
	if hdr then
		return hand_over(conn, hdr);
	elseif code == "NP_EAGAIN" then
		return; -- the loop calls again when more has arrived; the deadline runs
	elseif code == "NP_ECLOSED" then
		return refuse(conn, "info", "closed by the proxy before a complete PROXY header");
	elseif code == "NP_ETOOBIG" then
		return refuse(conn, "warn", "PROXY header larger than proxy_max_header (%d bytes) (%s)",
			max_header, code);
	elseif code == "NP_ESYS" then
		return refuse(conn, "error", "reading the PROXY header: %s (%s)", n, code);
	end
	return refuse(conn, "warn", "bad PROXY header: %s (%s)", n, code);
end

-- The connection's onreadable until the header is in. Never raises: an
-- error inside is a bug, logged once with where it happened, and the
-- connection is closed.
local function onreadable(conn)
	local ok, err = xpcall(read_header, traceback, conn);
	if not ok then
		module:log("error", "Internal error reading a PROXY header, connection closed: %s", err);
		pending[conn] = nil;
		conn:close();
	end
end

function listener.onconnect(conn)
	-- The peer's own address: conn:ip() falls back to the local one when
	-- getpeername() failed, as it does once the peer has reset.
	local ip = conn.peername;
	if not ip then
		-- HAProxy's health checks reset as soon as they are accepted.
		return refuse(conn, "debug", "reset by the peer before it could be read (a health check?)");
	elseif not is_trusted(ip) then
		return refuse(conn, "warn", "not a trusted proxy (proxy_trusted_proxies)");
	end
	pending[conn] = true;
	-- The deadline counts from the accept and no byte moves it: nothing
	-- but the hand-over reschedules this timer.
	conn:setreadtimeout(header_timeout);
	conn.onreadable = onreadable;
end

function listener.onreadtimeout(conn)
	refuse(conn, "warn", "no complete PROXY header within proxy_header_timeout (%g s)", header_timeout);
end

-- Data can only come here through a backend that bypasses onreadable.
function listener.onincoming(conn)
	refuse(conn, "error", "data arrived before the PROXY header was read");
end

function listener.ondisconnect(conn)
	pending[conn] = nil;
end

listener.ondetach = listener.ondisconnect;

--- Outgoing s2s through a proxy ------------------------------------------------------
--
-- With proxy_out, outgoing s2s connections go to that one address instead of
-- the remote server's, and open with a PROXY v2 header whose AUTHORITY TLV
-- names the remote domain (HAProxy: fc_pp_authority), for the proxy to
-- reach it. DNS is the proxy's business. With proxy_secure_out the proxy
-- speaks TLS to the remote server and the stream counts as encrypted.

local resolvers_service = require "net.resolvers.service";
local resolvers_manual = require "net.resolvers.manual";
local original_service_new = resolvers_service.new;

local function service_new(hostname, service, conn_type, extra)
	if proxy_out and (service == "xmpp-server" or service == "xmpps-server") then
		if service == "xmpps-server" then
			return resolvers_manual.new({}, conn_type, extra); -- the proxy does TLS, if anyone
		end
		local mark = setmetatable({ netproxy_authority = hostname }, { __index = extra });
		return resolvers_manual.new({ { proxy_out.family, proxy_out.addr, proxy_out.port, mark } },
			conn_type, mark);
	end
	return original_service_new(hostname, service, conn_type, extra);
end
resolvers_service.new = service_new;

module:hook("s2sout-connected", function (event)
	local session = event.session;
	local conn = session and session.conn;
	local authority = conn and conn.extra and rawget(conn.extra, "netproxy_authority");
	if not authority then return; end
	local sock = conn:socket();
	local ok, laddr, lport = pcall(sock.getsockname, sock);
	local family = conn:ip():find(":", 1, true) and "INET6" or "INET";
	local header, reason = np.build_v2({ family = family,
		src_addr = ok and laddr or (family == "INET6" and "::" or "0.0.0.0"),
		src_port = ok and tonumber(lport) or 0,
		dst_addr = conn:ip(), dst_port = conn:port() },
		{ { np.TLV_AUTHORITY, authority } });
	if not header then
		session.log("error", "Cannot build the PROXY header for %s: %s", authority, reason);
		return session:close();
	end
	conn:write(header); -- first on the wire: the stream header follows it
	session.log("debug", "Outgoing s2s to %s through the proxy at %s port %d", authority,
		conn:ip(), conn:port());
	if secure_out then
		session.secure = true; -- as for proxy_secure_in: the proxy does the TLS
		conn.starttls = false;
	end
end, 1000);

--- Life cycle ---------------------------------------------------------------------

module:provides("net", {
	name = "proxy";
	listener = listener;
	default_ports = mapped_ports();
});

-- After every module of the start-up has loaded (timers run once the main
-- loop does), or at once when loaded into a running server.
module:add_timer(0, check_mappings);

module:hook_global("config-reloaded", function ()
	read_options();
	tls_by_port, warned = {}, {};
	check_mappings();
end);

function module.unload()
	resolvers_service.new = original_service_new;
	for conn in pairs(pending) do
		pending[conn] = nil;
		conn:close();
	end
end
