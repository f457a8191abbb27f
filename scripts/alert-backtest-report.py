#!/usr/bin/env python3
"""Summarises a `MODE=backtest scripts/alert-demo.sh` run (issue 9, figures in BENCHMARKS.md).

Usage: alert-backtest-report.py HISTORY_DIR RUN_DIR QUIET_DAYS

Reads RUN_DIR/backtest-quiet.json and (when present) RUN_DIR/backtest-spikes.json, written by
`fleetpulse-analyzer alerts backtest --json`, and the simulator's spike reports
HISTORY_DIR/spikes-{big,mid}.json. Prints:
- quiet: alerts that fired per tenant and per simulated week, each with observed vs expected;
- spikes: per spike and tenant, detected or not and the delay from the spike's start to the
  tick that fired, in evaluation intervals; then per category and tenant size.
A spike counts as detected for a tenant when that tenant's alert on the spike's category (the
analyzer's name for it) fired between the spike's start and its end plus one window.
"""

import collections
import datetime
import json
import os
import statistics
import sys

# The simulator's category names where the analyzer's catalog names them differently.
CAT = {"device_limit": "device_cap", "tpm_attestation": "tpm", "platform_restricted": "platform_blocked"}
TENANTS = {"big": ["big1", "big2", "*"], "mid": ["mid1", "mid2"]}
SIZE = {"big1": "4000", "big2": "4000", "mid1": "400", "mid2": "400", "tiny1": "40", "*": "all"}


def ts(s):
    base = datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    frac = s[19:].rstrip("Z").split("+")[0]
    return base.timestamp() + (float(frac) if frac.startswith(".") else 0.0)


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main():
    hist, run, quiet_days = sys.argv[1], sys.argv[2], int(sys.argv[3])
    quiet = json.load(open(f"{run}/backtest-quiet.json"))
    step = quiet["step"]
    print(f"cadence {step} s, window {quiet['window']} s")
    print(f"quiet: {quiet['evaluations']} evaluations over {quiet_days} days")
    fired = [e for e in quiet["episodes"] if e["firing_at"] is not None]
    per = collections.Counter(e["tenant"] for e in fired)
    for t in ["big1", "big2", "mid1", "mid2", "tiny1", "*"]:
        print(f"  {t}: {per.get(t, 0)} fired ({per.get(t, 0) / quiet_days * 7:.2f} per simulated week)")
    print(f"  total: {len(fired)} fired; episodes opened (pending included): {len(quiet['episodes'])}")
    for e in fired:
        print(
            f"  quiet alert: {e['tenant']} {e['dimension']}={e['dimension_value']} firing {iso(e['firing_at'])} "
            f"observed {e['observed_count']} ({e['observed_rate']:.4f}) vs expected {e['expected_count']:.1f} "
            f"({e['expected_rate']:.4f}), devices {e['affected_devices']}, dispersion {e.get('dispersion', 0):.2f}"
        )
    path = f"{run}/backtest-spikes.json"
    if not os.path.exists(path):
        return
    spk = json.load(open(path))
    print(f"spike days: {spk['evaluations']} evaluations")
    rows, matched = [], set()
    for fleet, tenants in TENANTS.items():
        f = f"{hist}/spikes-{fleet}.json"
        if not os.path.exists(f):
            continue
        for line in open(f):
            s = json.loads(line)
            start, end = ts(s["start"]), ts(s["end"])
            cat = CAT.get(s["category"], s["category"])
            for t in tenants:
                hits = [
                    e
                    for e in spk["episodes"]
                    if e["tenant"] == t
                    and e["dimension"] == "category"
                    and e["dimension_value"] == cat
                    and e["firing_at"] is not None
                    and start <= e["firing_at"] <= end + spk["window"]
                ]
                if hits:
                    h = min(hits, key=lambda e: e["firing_at"])
                    matched.add(h["alert_id"])
                    rows.append((cat, t, (h["firing_at"] - start) / step))
                else:
                    rows.append((cat, t, None))
    for cat, t, d in rows:
        print(f"  spike {cat} {t}: " + ("missed" if d is None else f"{d:.2f} intervals"))
    by = collections.defaultdict(list)
    for cat, t, d in rows:
        by[(cat, SIZE[t])].append(d)
    print("per category and tenant size (devices): detected/spikes, delays in intervals")
    for (cat, size), ds in sorted(by.items()):
        got = sorted(d for d in ds if d is not None)
        print(f"  {cat:16} {size:>5}: {len(got)}/{len(ds)} " + (" ".join(f"{d:.1f}" for d in got) or "-"))
    for size in ("4000", "400", "all"):
        ds = [d for cat, t, d in rows if SIZE[t] == size]
        got = sorted(d for d in ds if d is not None)
        med = f"median {statistics.median(got):.2f}" if got else "-"
        print(f"  size {size}: detected {len(got)}/{len(ds)}, {med}, <= 2 intervals: {sum(d <= 2 for d in got)}")
    other = [e for e in spk["episodes"] if e["firing_at"] is not None and e["alert_id"] not in matched]
    print(f"other alerts during the spike days (matching no spike): {len(other)}")
    for e in other:
        print(
            f"  other: {e['tenant']} {e['dimension']}={e['dimension_value']} firing {iso(e['firing_at'])} "
            f"observed {e['observed_count']} vs {e['expected_count']:.1f}"
        )


if __name__ == "__main__":
    main()
