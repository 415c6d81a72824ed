#!/usr/bin/env python3
"""Turns bench/run's raw measurements (JSON lines) into the Markdown results table.

Each measured run is one line {"row", "round", "cpu_us", "wall_us", "load": {wrk numbers}}.
Per row the table shows medians over rounds. A ratio to the reference row is the median of the
per-round ratios: both runs of a round were taken back to back, so slow drift in the machine's
background load cancels out of each ratio instead of adding to it.
"""

import json
import statistics
import sys

ROWS = {
    "1": "upstream direct (nginx static, reference for 2-3)",
    "2": "nginx proxy -> upstream (keepalive)",
    "2u": "nginx + Lua forward: the sidecar's job (session in a `lua_shared_dict`)",
    "2p": "plain pingora forward (no session logic): the floor",
    "3": "sidecar forward: session by X-Session-Id + identity headers",
    "4": "nginx static `return 200`",
    "4u": "nginx + Lua KC `GET /sessions/{id}` from the dict",
    "4p": "plain pingora direct answer (the KC answer's bytes): the floor",
    "5": "sidecar KC `GET /gks-server/v1/sessions/{id}`",
    "3x2": "sidecar forward, 2 workers (`server.threads = 2`)",
    "5x2": "sidecar KC GET, 2 workers",
    "2ux2": "nginx + Lua forward, `worker_processes 2`",
    "4ux2": "nginx + Lua KC GET, `worker_processes 2`",
    "6": "sidecar memory store: resident bytes per idle session",
    "7": "sidecar session creation, Redis store (`POST /admin/sessions`)",
    "7r": "`redis-benchmark -t set` (reference for 7)",
    "2L": "nginx proxy with `access_log` (combined, to a file)",
    "3L": "sidecar forward with the access log (JSON, to a file)",
    "3t": "sidecar forward with tracing, `sample_ratio = 0.01`",
    "3T": "sidecar forward with tracing, `sample_ratio = 1.0`",
}

# Issue 17: TLS 1.3 + h2 beside nginx's TLS termination of the same upstream (h2load). Rows 8
# count new connections (one request each), rows 9 requests over a fixed set of connections.
TLS_ROWS = {
    "8n": "nginx `listen ssl http2`: new TLS connections, one h2 request each",
    "8": "sidecar `tls_listen`: new TLS connections, one h2 request each",
    "9n": "nginx `listen ssl http2`: h2 forwarding over TLS",
    "9": "sidecar `tls_listen`, `http2 = true`: h2 forwarding over TLS",
}
TLS_VERSUS = {"8": "8n", "9": "9n"}

# Issue 19: what the access log and tracing add to a forwarded request's CPU, each against the
# same proxy without them, measured in the same rounds. (row, reference, label, target or None)
OVERHEADS = [
    ("3L", "3", "sidecar access log (JSON to a file)", 1.10),
    ("2L", "2", "nginx `access_log` (combined, to a file): the reference to beat", None),
    ("3t", "3", "sidecar tracing at sample_ratio 0.01", None),
    ("3T", "3", "sidecar tracing at sample_ratio 1.0", None),
]

# The "vs reference" column of the main table: (row, reference row, "req/s" or "cpu").
VERSUS = [
    ("2u", "2", "cpu"),
    ("2p", "2", "cpu"),
    ("3", "2u", "cpu"),
    ("3", "2p", "cpu"),
    ("3", "2", "req/s"),
    ("4u", "4", "req/s"),
    ("4p", "4", "req/s"),
    ("5", "4", "req/s"),
    ("5", "4p", "cpu"),
    ("5", "4u", "cpu"),
    ("3x2", "3", "req/s"),
    ("5x2", "5", "req/s"),
    ("2ux2", "2u", "req/s"),
    ("4ux2", "4u", "req/s"),
    ("7", "7r", "req/s"),
]

# SPEC §13.6: (row, reference row, what is compared, target, True if higher is better, name).
# "memory" and "p99" are judged from their own records, not a ratio.
TARGETS = [
    ("3", "2u", "cpu", 1.0, False, "forwarding CPU/request <= 1.0x nginx + Lua"),
    ("3", "2p", "cpu", 1.10, False, "forwarding CPU/request <= 1.10x plain pingora"),
    ("5", "4", "req/s", 0.85, True, "KC GET req/s >= 0.85x nginx static"),
    ("5", "4p", "cpu", 1.10, False, "KC GET CPU/request <= 1.10x pingora's direct answer"),
    ("3x2", "3", "req/s", 1.8, True, "2 workers >= 1.8x 1 worker, forwarding"),
    ("5x2", "5", "req/s", 1.8, True, "2 workers >= 1.8x 1 worker, KC GET"),
    ("6", None, "memory", 512, False, "memory store <= 512 B per idle session"),
    ("7", "7r", "req/s", 0.5, True, "Redis session creation >= 0.5x redis-benchmark SET"),
    ("7", None, "p99", 10.0, False, "Redis session creation p99 <= 10 ms"),
]

# Rows whose contender runs unpinned on every core, beside the load generator.
SCALING = ("3x2", "5x2", "2ux2", "4ux2")

# A contender busy less than this share of one core was probably held back by the load
# generator or the upstream rather than by itself.
SATURATED = 0.85


def load(path):
    runs, meta, other = {}, {}, []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            kind = rec.get("kind")
            if kind == "meta":
                meta[rec["key"]] = rec["value"]
            elif kind is None:
                runs.setdefault(rec["row"], []).append(rec)
            else:
                other.append(rec)
    return runs, meta, other


def rps(run):
    return run["load"]["requests"] * 1e6 / run["load"]["duration_us"]


def cpu_per_request(run):
    return run["cpu_us"] / max(run["load"]["requests"], 1)


def busy(run):
    return run["cpu_us"] / max(run["wall_us"], 1)


def errors(run):
    l = run["load"]
    return sum(l.get(k, 0) for k in
               ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts"))


def per_round_ratio(runs, row, ref, metric):
    by_round = {r["round"]: r for r in runs.get(ref, [])}
    ratios = []
    for r in runs.get(row, []):
        b = by_round.get(r["round"])
        if b is None:
            continue
        if metric == "req/s":
            ratios.append(rps(r) / rps(b))
        else:
            ratios.append(cpu_per_request(r) / cpu_per_request(b))
    return ratios


def fmt_ratio(ratios):
    if not ratios:
        return None
    med = statistics.median(ratios)
    if len(ratios) > 1:
        return f"{med:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
    return f"{med:.2f}x"


def memory_count(memory):
    return memory["sessions_after"] - memory["sessions_before"]


def per_session(memory):
    return (memory["rss_after"] - memory["rss_before"]) / memory_count(memory)


QUICK = False  # set by main: a quick run's verdicts say they are not evidence


def verdict(value, target, higher_better):
    ok = value >= target if higher_better else value <= target
    word = "met" if ok else "**not met**"
    return f"{word} (quick run: not evidence)" if QUICK else word


def ms(us):
    return "" if us is None else f"{us / 1000:.2f} ms"


def tls_section(w, runs, meta):
    w("## TLS and HTTP/2 (issue 17)")
    w("")
    w(f"{meta.get('h2load', 'h2load')} ({meta.get('openssl', 'OpenSSL ?')}), one thread, on the "
      "load core. nginx (`listen ... ssl http2`, `ssl_protocols TLSv1.3`, one worker, proxying "
      "like row 2) and the sidecar (`tls_listen`, `[server.tls]` with `min_version = \"1.3\"`, "
      "`http2 = true`, one thread) serve the same ECDSA P-256 certificate made for this run, "
      "in front of the same upstream with a keep-alive pool; every request is `GET /` with the "
      "same `X-Session-Id` (the TLS sidecar's session). Rows 8: h2load runs of "
      f"{meta.get('tls_batch', '?')} clients making one request each (`-c` = `-n`), back to "
      f"back for {meta.get('seconds')} s: every connection a full handshake, none resumed; the "
      "rate is connections per second of h2load's own run time, the CPU is per connection "
      "(accept, handshake, one forwarded request, close). Rows 9: `h2load -c C -m M -D "
      f"{meta.get('seconds')}` with C x M = {meta.get('tls_h2', '?')} streams in flight over "
      "connections opened once.")
    w("")
    w("| # | contender | rate | p50 | p99 | CPU us | per CPU-second | busy | vs nginx |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for row, label in TLS_ROWS.items():
        rs = runs.get(row, [])
        if not rs:
            continue
        handshake = row.startswith("8")
        unit, per = ("conn/s", "/conn") if handshake else ("req/s", "/req")
        p50 = [r["load"]["p50_us"] for r in rs if r["load"]["p50_us"] is not None]
        p99 = [r["load"]["p99_us"] for r in rs if r["load"]["p99_us"] is not None]
        cells = [
            f"{statistics.median(rps(r) for r in rs):,.0f} {unit}",
            ms(statistics.median(p50)) if p50 else "",
            ms(statistics.median(p99)) if p99 else "",
            f"{statistics.median(cpu_per_request(r) for r in rs):.1f} {per}",
            f"{1e6 / statistics.median(cpu_per_request(r) for r in rs):,.0f}",
            f"{statistics.median(busy(r) for r in rs) * 100:.0f}%",
        ]
        versus = []
        ref = TLS_VERSUS.get(row)
        if ref in runs:
            for metric, name in (("req/s", unit), ("cpu", "CPU" + per)):
                ratio = fmt_ratio(per_round_ratio(runs, row, ref, metric))
                if ratio:
                    versus.append(f"{name} {ratio} of {ref}")
        w(f"| {row} | {label} | " + " | ".join(cells) + f" | {'; '.join(versus)} |")
    w("")
    negotiated = []
    for row in TLS_ROWS:
        tls = {}
        for r in runs.get(row, []):
            for k, v in r["load"].get("tls", {}).items():
                tls.setdefault(k, set()).update(v)
        if tls:
            negotiated.append(f"{row}: " + ", ".join(
                "/".join(sorted(tls.get(k, ()))) or "?" for k in ("protocol", "cipher", "key_exchange", "alpn")))
    w("Negotiated (as h2load reports it): " + "; ".join(negotiated) + ". p50/p99 of rows 9 are "
      "h2load's request times (`--log-file`); rows 8 have none that would mean anything (a burst "
      "of new connections queues for the handshake). The ratios are medians of per-round ratios, "
      "as above; \"busy\" of rows 8 is over h2load's run time, not its start-up between runs. "
      "\"per CPU-second\" is 1 / CPU us: the connections or requests one fully busy core would "
      "serve at the measured cost, the rate to compare when a contender was not saturated.")
    w("")


def main():
    global QUICK
    runs, meta, other = load(sys.argv[1])
    QUICK = meta.get("mode") == "quick"
    unavailable = {o["row"]: o["why"] for o in other if o.get("kind") == "unavailable"}
    memory = next((o for o in other if o.get("kind") == "memory"), None)
    latency = [o for o in other if o.get("kind") == "latency"]
    lookups = {o["row"]: o for o in other if o.get("kind") == "lookups"}
    out = []
    w = out.append

    w(f"# session-sidecar benchmark ({meta.get('mode', '?')} run, {meta.get('date', '?')})")
    w("")
    w(f"{meta.get('rounds')} rounds x {meta.get('seconds')} s per contender, alternating; "
      f"wrk 1 thread, {meta.get('connections')} connections; one worker per contender; "
      f"{meta.get('pinning')}.")
    steal = int(meta.get("steal", 0)) / 10
    w(f"Load average before {meta.get('load_before')}, after {meta.get('load_after')} "
      f"(1/5/15 min, {meta.get('nproc')} cores); CPU time stolen by the hypervisor during the "
      f"run: {steal:.1f}%.")
    if meta.get("mode") == "quick":
        w("")
        w("**Quick run (BENCH_QUICK=1): short runs, few rounds; a smoke test of the script, "
          "too noisy to judge any target by.**")
    if any(row in runs for row in SCALING):
        w("")
        w("The 2-worker rows (x2) run unpinned on every core, beside the load generator and the "
          "upstream; their busy share is of one core, so up to 200%.")
    w("")
    w("| # | contender | req/s | p50 | p99 | CPU us/req | busy | vs reference |")
    w("|---|---|---:|---:|---:|---:|---:|---|")
    for row, label in ROWS.items():
        if row == "6":
            if memory:
                per = per_session(memory)
                w(f"| 6 | {label} | | | | | | **{per:.0f} B** = {per / 512:.2f}x of 512 B, "
                  f"over {memory_count(memory):,.0f} sessions |")
            continue
        if row in unavailable:
            w(f"| {row} | {label} | not available in this build | | | | | |")
            continue
        rs = runs.get(row, [])
        if not rs:
            continue
        cells = [
            f"{statistics.median(rps(r) for r in rs):,.0f}",
            f"{statistics.median(r['load']['p50_us'] for r in rs) / 1000:.2f} ms",
            f"{statistics.median(r['load']['p99_us'] for r in rs) / 1000:.2f} ms",
            f"{statistics.median(cpu_per_request(r) for r in rs):.1f}",
            f"{statistics.median(busy(r) for r in rs) * 100:.0f}%",
        ]
        versus = []
        for t_row, ref, metric in VERSUS:
            if t_row == row and ref in runs:
                ratio = fmt_ratio(per_round_ratio(runs, row, ref, metric))
                if ratio:
                    name = "req/s" if metric == "req/s" else "CPU/req"
                    versus.append(f"{name} {ratio} of {ref}")
        w(f"| {row} | {label} | " + " | ".join(cells) + f" | {'; '.join(versus)} |")
    w("")

    w("## Targets (SPEC §13.6)")
    w("")
    w("Ratios are medians of per-round ratios (both runs of a round back to back); the range "
      "is the rounds' spread.")
    w("")
    w("| target | measured | |")
    w("|---|---|---|")
    for t_row, ref, metric, target, higher, name in TARGETS:
        if metric == "memory":
            if memory:
                per = per_session(memory)
                w(f"| {name} | {per:.0f} B over {memory_count(memory):,.0f} sessions | "
                  f"{verdict(per, target, higher)} |")
            else:
                w(f"| {name} | not measured | |")
            continue
        if t_row in unavailable:
            w(f"| {name} | not available in this build | |")
            continue
        if metric == "p99":
            rs = runs.get(t_row, [])
            if not rs:
                w(f"| {name} | not measured | |")
                continue
            worst = max(r["load"]["p99_us"] for r in rs) / 1000
            w(f"| {name} | {worst:.2f} ms (worst round) | {verdict(worst, target, higher)} |")
            continue
        ratios = per_round_ratio(runs, t_row, ref, metric)
        if not ratios:
            w(f"| {name} | not measured | |")
            continue
        med = statistics.median(ratios)
        note = ""
        if t_row in SCALING and int(meta.get("nproc", 0)) < 4:
            note = " (2 workers and the load generator shared the machine's cores: a lower bound)"
        w(f"| {name} | {fmt_ratio(ratios)}{note} | {verdict(med, target, higher)} |")
    w("")

    if latency:
        w("## Latency at a fixed rate")
        w("")
        rate = latency[0]["rate"]
        w(f"oha at {rate:,} req/s (half the nginx proxy's measured req/s), {meta.get('connections')} "
          "connections, latency corrected for coordinated omission. Medians over rounds; "
          "\"added\" is the proxy's percentile minus the direct upstream's (row 1) in the same "
          "round, then the median over rounds.")
        w("")
        w("| # | contender | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | CPU us/req | failed |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        by = {}
        for l in latency:
            by.setdefault(l["row"], {})[l["round"]] = l
        direct = by.get("1", {})
        for row in ("1", "2", "2u", "2p", "3"):
            if row not in by:
                continue
            ls = list(by[row].values())
            cells = []
            for k in ("p50_us", "p99_us", "p999_us"):
                cells.append(f"{statistics.median(l[k] for l in ls) / 1000:.3f} ms")
            for k in ("p50_us", "p99_us", "p999_us"):
                added = [by[row][n][k] - direct[n][k] for n in by[row] if n in direct]
                cells.append("" if row == "1" or not added else
                             f"{statistics.median(added) / 1000:+.3f} ms")
            cpu = statistics.median(l["cpu_us"] / max(l["ok"] + l["failed"], 1) for l in ls)
            failed = sum(l["failed"] for l in ls)
            w(f"| {row} | {ROWS[row]} | " + " | ".join(cells) + f" | {cpu:.1f} | {failed} |")
        w("")

    if any(row in runs for row in TLS_ROWS):
        tls_section(w, runs, meta)

    if any(row in runs for row, *_ in OVERHEADS):
        w("## Observability cost (issue 19)")
        w("")
        w("CPU per forwarded request with the feature on, divided by the same proxy's without it, "
          "per round; the median and the range.")
        w("")
        w("| feature | CPU/req ratio | added CPU us/req | |")
        w("|---|---|---:|---|")
        for row, ref, label, target in OVERHEADS:
            ratios = per_round_ratio(runs, row, ref, "cpu")
            if not ratios:
                continue
            added = (statistics.median(cpu_per_request(r) for r in runs[row])
                     - statistics.median(cpu_per_request(r) for r in runs[ref]))
            judged = ""
            if target is not None:
                judged = f"target <= {target:.2f}x: {verdict(statistics.median(ratios), target, False)}"
            w(f"| {label} | {fmt_ratio(ratios)} | {added:+.1f} | {judged} |")
        obs = next((o for o in other if o.get("kind") == "observability"), None)
        if obs:
            w("")
            w(f"Checks: the sidecar's access log holds {obs['access_log_lines']:,} lines and nginx's "
              f"{obs['nginx_access_log_lines']:,}; trace export errors: {obs['trace_export_errors']:.0f}.")
        w("")

    notes = []
    for row, rs in sorted(runs.items()):
        bad = sum(errors(r) for r in rs)
        if bad:
            notes.append(f"row {row}: {bad} failed requests (non-2xx or socket errors) in the measured runs")
        if row not in ("1", "7r") + SCALING and statistics.median(busy(r) for r in rs) < SATURATED:
            notes.append(f"row {row}: the contender was busy only "
                         f"{statistics.median(busy(r) for r in rs) * 100:.0f}% of a core: the load "
                         "generator and upstream on the other core, or other processes on this "
                         "machine, held it back, so its req/s is not its capacity; CPU/req is the "
                         "fairer comparison")
    if "3" in lookups and "3" in runs:
        total = sum(r["load"]["requests"] for r in runs["3"])
        notes.append(f"row 3: {lookups['3']['hits']:,.0f} session lookups hit for {total:,} requests "
                     "wrk counted (it does not count the answers in flight when a run ends)")
    if "8+9" in lookups and ("8" in runs or "9" in runs):
        total = sum(r["load"]["requests"] for row in ("8", "9") for r in runs.get(row, []))
        notes.append(f"rows 8 and 9: {lookups['8+9']['hits']:,.0f} session lookups hit in the TLS "
                     f"sidecar for {total:,} requests h2load counted as succeeded (it does not count "
                     "the answers in flight when a timed run ends)")
    for row, why in sorted(unavailable.items()):
        notes.append(f"row {row}: {why}")
    if memory:
        n = memory["sessions_after"] - memory["sessions_before"]
        notes.append(f"row 6: VmRSS {memory['rss_before'] / 2**20:,.1f} MiB -> "
                     f"{memory['rss_after'] / 2**20:,.1f} MiB for {n:,.0f} sessions created through "
                     f"the admin API at {n / (memory['fill_us'] / 1e6):,.0f} sessions/s")
    if notes:
        w("Notes:")
        w("")
        for n in notes:
            w(f"* {n}")
        w("")

    w("<details><summary>Every measured run</summary>")
    w("")
    w("| row | round | req/s | p50 | p99 | CPU us/req | busy | errors |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in list(ROWS) + list(TLS_ROWS):
        for r in sorted(runs.get(row, []), key=lambda r: r["round"]):
            w(f"| {row} | {r['round']} | {rps(r):,.0f} | {ms(r['load']['p50_us'])} | "
              f"{ms(r['load']['p99_us'])} | {cpu_per_request(r):.1f} | "
              f"{busy(r) * 100:.0f}% | {errors(r)} |")
    w("")
    w("</details>")
    w("")
    w(f"Machine: {meta.get('nproc')} x {meta.get('cpu')}, {meta.get('kernel')}; {meta.get('rustc')}; "
      f"nginx {meta.get('nginx')}; {meta.get('wrk')}; redis {meta.get('redis')}; "
      f"{meta.get('lua_module', 'libnginx-mod-http-lua ?')}; {meta.get('oha', 'oha not used')}; "
      f"{meta.get('sidecar')}.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
