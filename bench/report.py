"""The comparison's table: medians and spread per receiver, ratios to HAProxy
and to the direct path, and issues 7's and 12's targets checked against the ratios.

Input: samples[receiver name][metric] = {round: value} over the repeated
rounds, and the receivers in table order (direct first). Output: Markdown
text, which is also readable as it is in a terminal.

A ratio is the median of the ratios within each round, not the ratio of the
medians: every receiver of a round ran within the same minute, so a change of
the machine's speed between rounds cancels out of it.
"""
import statistics

# key, what, unit, the mode it comes from, better when "higher" or "lower",
# whether it exists for the direct path (CPU and memory are the receiver's).
METRICS = [
    ("conn_rate", "new connections", "/s", "conn", "higher", True),
    ("conn_cpu", "CPU per new connection", "µs", "conn", "lower", False),
    ("kept_rate", "requests on kept connections", "/s", "kept", "higher", True),
    ("kept_cpu", "CPU per request on a kept connection", "µs", "kept", "lower", False),
    ("lat_kept_p50", "latency of a request, one at a time: p50", "µs", "lat-kept", "lower", True),
    ("lat_kept_p99", "latency of a request, one at a time: p99", "µs", "lat-kept", "lower", True),
    ("lat_kept_p999", "latency of a request, one at a time: p99.9", "µs", "lat-kept", "lower",
     True),
    ("lat_conn_p50", "latency of a new connection, one at a time: p50", "µs", "lat-conn",
     "lower", True),
    ("lat_conn_p99", "latency of a new connection, one at a time: p99", "µs", "lat-conn",
     "lower", True),
    ("lat_conn_p999", "latency of a new connection, one at a time: p99.9", "µs", "lat-conn",
     "lower", True),
    ("up_rate", "throughput client → server", "MiB/s", "up", "higher", True),
    ("up_cpu", "CPU per GiB relayed client → server", "s", "up", "lower", False),
    ("down_rate", "throughput server → client", "MiB/s", "down", "higher", True),
    ("down_cpu", "CPU per GiB relayed server → client", "s", "down", "lower", False),
    ("mixed_kept_p50", "beside bulk streams, a request on a kept connection: p50", "µs",
     "mixed", "lower", True),
    ("mixed_kept_p99", "beside bulk streams, a request on a kept connection: p99", "µs",
     "mixed", "lower", True),
    ("mixed_kept_p999", "beside bulk streams, a request on a kept connection: p99.9", "µs",
     "mixed", "lower", True),
    ("mixed_conn_p50", "beside bulk streams, a new connection: p50", "µs", "mixed", "lower",
     True),
    ("mixed_conn_p99", "beside bulk streams, a new connection: p99", "µs", "mixed", "lower",
     True),
    ("mixed_conn_p999", "beside bulk streams, a new connection: p99.9", "µs", "mixed", "lower",
     True),
    ("mixed_bulk_rate", "the bulk streams' throughput, client → server", "MiB/s", "mixed",
     "higher", True),
    ("idle_rss", "RSS per idle relayed connection", "KiB", "idle", "lower", False),
]

HAPROXY, DIRECT = "haproxy", "direct"


def spread(by_round):
    """(median, min, max) of the repeated runs' values."""
    values = list(by_round.values())
    return statistics.median(values), min(values), max(values)


def number(value, unit):
    if unit == "/s":
        return f"{value:,.0f}"
    if unit == "MiB/s":
        return f"{value:,.0f}"
    if unit in ("s", "KiB"):
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def rounds_of(samples, names, key):
    """For each round in which every one of names has a value of key, their values."""
    series = [samples.get(n, {}).get(key, {}) for n in names]
    common = set(series[0]).intersection(*series[1:])
    return [[x[r] for x in series] for r in sorted(common)]


def ratio_of(samples, receiver, reference, key):
    """The median over rounds of receiver's value / reference's, or None."""
    ratios = [a / b for a, b in rounds_of(samples, [receiver, reference], key) if b]
    return statistics.median(ratios) if ratios else None


def ratio_text(x):
    return f"{x:.2f}×" if x is not None else ""


def median_of(samples, receiver, key):
    values = samples.get(receiver, {}).get(key)
    return statistics.median(values.values()) if values else None


def table(samples, receivers, errors):
    """The main table: one row per metric and receiver.

    errors[receiver][mode] counts the runs that reported errors; such a value
    is marked, since an error can make a run look faster than it was.
    """
    rows = ["| metric | receiver | median | spread (min–max) | × HAProxy | × direct |",
            "|---|---|---:|---|---:|---:|"]
    for key, what, unit, mode, _, for_direct in METRICS:
        first = True
        for r in receivers:
            values = samples.get(r.name, {}).get(key)
            if not values:
                continue
            med, lo, hi = spread(values)
            mark = ""
            bad = errors.get(r.name, {}).get(mode, 0)
            if bad:
                mark = f" (errors in {bad} run{'s' if bad > 1 else ''})"
            rows.append("| {} | {} | {}{} | {}–{} | {} | {} |".format(
                f"{what} ({unit})" if first else "", r.label, number(med, unit), mark,
                number(lo, unit), number(hi, unit),
                ratio_text(ratio_of(samples, r.name, HAPROXY, key)) if r.name != HAPROXY else "",
                ratio_text(ratio_of(samples, r.name, DIRECT, key))
                if for_direct and r.name != DIRECT else ""))
            first = False
    return "\n".join(rows)


def targets(samples, receivers, shim_added_ns):
    """Issues 7's and 12's targets for each netproxyd delivery mode, checked in this run.

    The verdict is the median round's; when the rounds disagree the row says
    in how many the target was met, since the verdict is then within the
    noise of this machine.
    """
    rows = ["| target | netproxyd | this run: median (rounds) | met |", "|---|---|---|---|"]

    def check(goal, label, text, ok, per_round):
        met = sum(per_round)
        verdict = "met" if ok else "**not met**"
        if 0 < met < len(per_round):
            verdict += f" (met in {met} of {len(per_round)} rounds)"
        rows.append(f"| {goal} | {label} | {text} | {verdict} |")

    def ratio_target(goal, r, key, reference, ok):
        xs = [a / b for a, b in rounds_of(samples, [r.name, reference], key) if b]
        if xs:
            x = statistics.median(xs)
            check(goal, r.label, f"{x:.2f}× ({min(xs):.2f}–{max(xs):.2f})", ok(x),
                  [ok(v) for v in xs])

    for r in receivers:
        if not r.name.startswith("netproxyd"):
            continue
        for key, limit, goal in (("conn_cpu", 0.6, "CPU per new connection ≤ 0.6× HAProxy"),
                                 ("kept_cpu", 0.7, "CPU per request (kept) ≤ 0.7× HAProxy"),
                                 ("up_cpu", 0.7, "CPU per GiB client → server ≤ 0.7× HAProxy"),
                                 ("down_cpu", 0.7, "CPU per GiB server → client ≤ 0.7× HAProxy")):
            ratio_target(goal, r, key, HAPROXY, lambda x, limit=limit: x <= limit)
        for key, goal in (("up_rate", "throughput client → server ≥ 0.9× direct"),
                          ("down_rate", "throughput server → client ≥ 0.9× direct")):
            ratio_target(goal, r, key, DIRECT, lambda x: x >= 0.9)
        for key, what in (("lat_kept_p99", "a request"), ("lat_conn_p99", "a new connection")):
            triples = rounds_of(samples, [r.name, HAPROXY, DIRECT], key)
            if triples:
                # Within a round, added over direct ≤ HAProxy's means ours ≤ HAProxy's:
                # the verdict is the median round's, like the ratios'.
                ours = statistics.median(o - d for o, _, d in triples)
                theirs = statistics.median(h - d for _, h, d in triples)
                check(f"p99 latency of {what} added over direct ≤ HAProxy's", r.label,
                      f"{ours:+.1f} µs vs {theirs:+.1f} µs",
                      statistics.median(o - h for o, h, _ in triples) <= 0,
                      [o <= h for o, h, _ in triples])
        for key, what in (("mixed_kept_p99", "a request on a kept connection"),
                          ("mixed_conn_p99", "a new connection")):
            pairs = rounds_of(samples, [r.name, HAPROXY], key)
            if pairs:
                ours = statistics.median(o for o, _ in pairs)
                theirs = statistics.median(h for _, h in pairs)
                check(f"beside bulk streams, p99 latency of {what} ≤ HAProxy's (issue 12)",
                      r.label, f"{ours:.1f} µs vs {theirs:.1f} µs",
                      statistics.median(o - h for o, h in pairs) <= 0,
                      [o <= h for o, h in pairs])
        rss = [v for (v,) in rounds_of(samples, [r.name], "idle_rss")]
        if rss:
            check("RSS per idle relayed connection ≤ 1 KiB", r.label,
                  f"{statistics.median(rss):.2f} KiB", statistics.median(rss) <= 1.0,
                  [v <= 1.0 for v in rss])
    if shim_added_ns is not None:
        check("accept latency added by the shim ≤ 2 µs", "(the preload shim)",
              f"{shim_added_ns / 1000:+.2f} µs", shim_added_ns <= 2000, [])
    return "\n".join(rows)
