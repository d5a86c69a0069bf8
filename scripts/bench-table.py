"""Prints the markdown results table of scripts/bench from its JSON lines (argv[1])."""
import json
import statistics
import sys

runs = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line:
        run = json.loads(line)
        runs[run["label"]] = run


def get(label, *path):
    value = runs.get(label, {})
    for key in path:
        value = (value or {}).get(key) if isinstance(value, dict) else None
    return value


def fmt(value, unit=""):
    return "n/a" if value is None else f"{value:,.1f}{unit}".replace(".0" + unit, unit) if isinstance(value, float) else f"{value:,}{unit}"


print("| workload | messages/s (received) | server CPU µs/msg | load generator CPU µs/msg | latency ack→got p50 / p99 ms | latency send→got p50 / p99 ms | server RSS MiB | exactly once |")
print("|---|---|---|---|---|---|---|---|")
for label, run in runs.items():
    if label in ("W5-idle", "W8-churn-size"):
        continue
    print(
        f"| {label} | {fmt(run.get('received_per_s'))} | {fmt(run.get('server_cpu_us_per_msg'))} | "
        f"{fmt(run.get('bench_cpu_us_per_msg'))} | "
        f"{fmt(get(label, 'latency_ms', 'p50'))} / {fmt(get(label, 'latency_ms', 'p99'))} | "
        f"{fmt(get(label, 'latency_from_send_ms', 'p50'))} / {fmt(get(label, 'latency_from_send_ms', 'p99'))} | "
        f"{fmt(run.get('server_rss_mib'))} (peak {fmt(run.get('server_peak_rss_mib'))}) | "
        f"{run.get('exactly_once')} (lost {run.get('lost')}, duplicates {run.get('duplicates')}) |"
    )

print()
w3 = [label for label in runs if label.startswith("W3-")]
if len(w3) == 2:
    small, large = sorted(w3, key=lambda l: int(l.split("-")[1]))
    rate = lambda l: runs[l].get("received_per_s") or 0
    print(f"W3 ratio (drain rate {large} / {small}): {rate(large) / max(rate(small), 1):.2f}")
for variant in ("wait", "pipe"):
    for n in (1, 4, 16):
        prefix = f"W4-berth-{variant}-{n}-"
        rounds = sorted(int(l[len(prefix):]) for l in runs if l.startswith(prefix))
        pairs = [(runs[f"{prefix}{i}"], runs.get(f"W4-rabbitmq-{variant}-{n}-{i}", {})) for i in rounds]
        ratios = [b["received_per_s"] / max(r["received_per_s"], 1) for b, r in pairs
                  if b.get("received_per_s") and r.get("received_per_s")]
        if ratios:
            print(f"W4 {variant} N={n}: Berth/RabbitMQ throughput ratio, median of {len(ratios)} alternated rounds "
                  f"{statistics.median(ratios):.2f} (each: {', '.join(f'{x:.2f}' for x in ratios)})")
rounds = sorted({int(l.rsplit("-", 1)[1]) for l in runs if l.startswith("W1ab-berth-")})
measured = lambda run: run.get("received_per_s") and run.get("server_cpu_us_per_msg")
pairs = [(runs[f"W1ab-berth-{i}"], runs.get(f"W1ab-bare-{i}", {})) for i in rounds]
pairs = [(b, a) for b, a in pairs if measured(b) and measured(a)]
if pairs:
    med = statistics.median
    berth_rate, bare_rate = [b["received_per_s"] for b, _ in pairs], [a["received_per_s"] for _, a in pairs]
    berth_cpu, bare_cpu = [b["server_cpu_us_per_msg"] for b, _ in pairs], [a["server_cpu_us_per_msg"] for _, a in pairs]
    rate = [b / a for b, a in zip(berth_rate, bare_rate)]
    cpu = [b / a for b, a in zip(berth_cpu, bare_cpu)]
    print(
        f"W1 without auth, {len(pairs)} rounds alternated with bare axum: Berth median {med(berth_rate):,.0f} msg/s "
        f"(range {min(berth_rate):,.0f}-{max(berth_rate):,.0f}), server CPU median {med(berth_cpu):.1f} µs/msg; "
        f"bare axum median {med(bare_rate):,.0f} msg/s, {med(bare_cpu):.1f} µs/msg; Berth/bare per round: "
        f"throughput {', '.join(f'{r:.2f}' for r in rate)} (median {med(rate):.2f}), "
        f"server CPU {', '.join(f'{c:.2f}' for c in cpu)} (median {med(cpu):.2f})"
    )
print(f"W5: idle RSS {get('W5-idle', 'server_rss_mib')} MiB; under W1 {get('W1-auth', 'server_rss_mib')} MiB")
w8 = [label for label in runs if label.startswith("W8-") and not label.startswith(("W8-W3-", "W8-churn"))]
if w8:
    print()
    print("| W8 run | messages/s | Berth CPU µs/msg (all nodes) | PostgreSQL CPU µs/msg | exactly once |")
    print("|---|---|---|---|---|")
    for label in w8:
        run = runs[label]
        print(f"| {label} | {fmt(run.get('received_per_s'))} | {fmt(run.get('server_cpu_us_per_msg'))} | "
              f"{fmt(run.get('postgres_cpu_us_per_msg'))} | {run.get('exactly_once')} |")
    for kind in ("postgres-1node", "postgres-3node"):
        ratios = []
        for label in w8:
            if label.startswith(f"W8-{kind}-"):
                sqlite = runs.get(f"W8-sqlite-{label.rsplit('-', 1)[1]}", {})
                if sqlite.get("received_per_s"):
                    ratios.append(runs[label]["received_per_s"] / sqlite["received_per_s"])
        if ratios:
            print(f"W8 {kind}/SQLite throughput, per round: {', '.join(f'{r:.2f}' for r in ratios)} "
                  f"(median {statistics.median(ratios):.2f})")
w8w3 = [label for label in runs if label.startswith("W8-W3-")]
if len(w8w3) == 2:
    small, large = sorted(w8w3, key=lambda l: int(l.rsplit("-", 1)[1]))
    rate = lambda l: runs[l].get("received_per_s") or 0
    print(f"W8-W3 ratio on PostgreSQL (drain rate {large} / {small}): {rate(large) / max(rate(small), 1):.2f}")
churn = runs.get("W8-churn")
sizes = [json.loads(line) for line in open(sys.argv[1]) if '"W8-churn-size"' in line]
if sizes:
    print()
    print("| W8-churn at s | table MB | indexes MB | live rows | dead rows | autovacuums |")
    print("|---|---|---|---|---|---|")
    for sample in sizes:
        print(f"| {sample['t']} | {sample['table_mb']} | {sample['indexes_mb']} | {sample['live']} | "
              f"{sample['dead']} | {sample['autovacuums']} |")
    if churn:
        print(f"W8-churn: {fmt(churn.get('received_per_s'))} messages/s over the run, "
              f"exactly once: {churn.get('exactly_once')}")
w9 = [label for label in runs if label.startswith("W9")]
if w9:
    print()
    print("| W9 run | groups | messages/s per group (each group) | deliveries/s | server CPU µs/delivery | "
          "PostgreSQL CPU µs/msg | exactly once |")
    print("|---|---|---|---|---|---|---|")
    for label in w9:
        run = runs[label]
        groups = run.get("consumer_groups") or {}
        each = [g.get("received_per_s") for g in groups.get("groups", [])]
        print(f"| {label} | {len(each) or 'none'} | {', '.join(fmt(x) for x in each) or fmt(run.get('received_per_s'))} | "
              f"{fmt(groups.get('delivered_per_s', run.get('received_per_s')))} | "
              f"{fmt(groups.get('server_cpu_us_per_delivered', run.get('server_cpu_us_per_msg')))} | "
              f"{fmt(run.get('postgres_cpu_us_per_msg'))} | {run.get('exactly_once')} |")
    for prefix in ("W9", "W9-pg"):
        for n in (1, 4):
            ratios = []
            for label in w9:
                if label.startswith(f"{prefix}-groups{n}-"):
                    plain = runs.get(f"{prefix}-groups0-{label.rsplit('-', 1)[1]}", {})
                    mine = (runs[label].get("consumer_groups") or {}).get("delivered_per_s")
                    if plain.get("received_per_s") and mine:
                        ratios.append(mine / plain["received_per_s"])
            if ratios:
                print(f"{prefix} {n} group(s): deliveries/s over the plain queue's, per round: "
                      f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})")
