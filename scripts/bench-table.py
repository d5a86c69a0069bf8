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
    if label == "W5-idle":
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
for n in (1, 4, 16):
    b, r = runs.get(f"W4-berth-{n}", {}), runs.get(f"W4-rabbitmq-{n}", {})
    if b and r:
        print(f"W4 N={n}: Berth/RabbitMQ throughput ratio {b['received_per_s'] / max(r['received_per_s'], 1):.2f}")
rounds = sorted({int(l.rsplit("-", 1)[1]) for l in runs if l.startswith("W1ab-berth-")})
pairs = [(runs[f"W1ab-berth-{i}"], runs[f"W1ab-bare-{i}"]) for i in rounds if f"W1ab-bare-{i}" in runs]
if pairs:
    med = lambda values: statistics.median(values)
    rate = [b["received_per_s"] / max(a["received_per_s"], 1) for b, a in pairs]
    cpu = [b["server_cpu_us_per_msg"] / max(a["server_cpu_us_per_msg"], 0.1) for b, a in pairs]
    print(
        f"W1 without auth, {len(pairs)} rounds alternated with bare axum: Berth median "
        f"{med([b['received_per_s'] for b, _ in pairs]):,.0f} msg/s (range "
        f"{min(b['received_per_s'] for b, _ in pairs):,.0f}-{max(b['received_per_s'] for b, _ in pairs):,.0f}), "
        f"server CPU median {med([b['server_cpu_us_per_msg'] for b, _ in pairs]):.1f} µs/msg; bare axum median "
        f"{med([a['received_per_s'] for _, a in pairs]):,.0f} msg/s, "
        f"{med([a['server_cpu_us_per_msg'] for _, a in pairs]):.1f} µs/msg; Berth/bare per round: throughput "
        f"{', '.join(f'{r:.2f}' for r in rate)} (median {med(rate):.2f}), server CPU "
        f"{', '.join(f'{c:.2f}' for c in cpu)} (median {med(cpu):.2f})"
    )
print(f"W5: idle RSS {get('W5-idle', 'server_rss_mib')} MiB; under W1 {get('W1-auth', 'server_rss_mib')} MiB")
