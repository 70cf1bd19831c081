-- netproxyd as bench/compare.py runs it: one PROXY port relayed to the
-- benchmark's backend. Placeholders (a dollar sign and a name) are filled in by the script;
-- "service" adds send_proxy or transparent, or nothing for plain delivery.
proxy_ports = { "127.0.0.1:$port" }
proxy_port_mappings = { [$port] = "bench" }
-- The load generator connects from 127.0.0.2-127.0.0.250.
proxy_trusted_proxies = { "127.0.0.0/8" }
services = {
	bench = { connect = "127.0.0.1:$backend_port"$service },
}
-- One worker: the receiver has one CPU of its own (see bench/README.md).
workers = 1
max_connections = $max_connections
-- No line per connection: HAProxy and nginx are run without logs too.
log_level = "warn"
