-- /etc/netproxyd/netproxyd.conf.lua - netproxyd's configuration (netproxyd.conf(5)).
--
-- Connections with a PROXY header from a load balancer on this host arrive
-- on 15222 and 15269 and go to a Prosody (or any server) on 127.0.0.1, plain:
-- the original mod_net_proxy's example. Every key, with comments:
-- /usr/share/doc/netproxyd/examples/netproxyd.conf.lua. Check a change with
--
--     netproxyd -t -c /etc/netproxyd/netproxyd.conf.lua
--
-- then `systemctl reload netproxyd`, which refuses a file that fails the
-- check. netproxyd refuses a file that anyone but root may write.

proxy_port_mappings = {
	[15222] = "c2s",
	[15269] = "s2s",
}

-- Only these may send PROXY headers: anyone who can may claim any address.
proxy_trusted_proxies = { "127.0.0.1", "::1" }

services = {
	c2s = { connect = "127.0.0.1:5222" },
	s2s = { connect = "127.0.0.1:5269" },
}
