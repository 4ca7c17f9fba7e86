#!/usr/bin/env python3
"""Charts of tether's comparing benches, from their --out JSON files.

    bench/charts.py [--out-dir docs/bench] results.json [more.json ...]

Each file is a JSON list of results, as `tether bench peer --out` and
`tether bench echo --out` append them (bench/run-peer writes one). Writes
PNG files into --out-dir:

  latency-<scenario>-<n>.png  latency distribution (percentile against ms,
                              log scale), tether beside the other server:
                              room runs (send to last member, per message)
                              and echo runs (sampled round trips)
  rss.png                     server RSS against connections while idle
                              connections are made and held, both servers
  cpu-per-delivery.png        server CPU per delivery against room size
                              (every room result, one point per run)
  ratios.png                  every summary figure as tether / the other
  cluster-<nodes>x<members>.png  a cluster run (bench/cluster-90k's
                              cluster.json): send to last member per
                              message, CPU and RSS per node, and how long
                              each node took to drop a killed node's
                              members

Uses Debian's python3-matplotlib; when it is missing and this runs as
root, installs it with apt-get.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys


def need_matplotlib():
    try:
        import matplotlib  # noqa: F401

        return
    except ImportError:
        pass
    system = "/usr/bin/python3"

    def system_has_it():
        return os.path.exists(system) and subprocess.run(
            [system, "-c", "import matplotlib"], capture_output=True).returncode == 0

    if not system_has_it() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "--no-install-recommends", "python3-matplotlib"]
        if subprocess.run(install, env=env).returncode != 0:  # an old package list: update it once
            subprocess.run(["apt-get", "update"], env=env)
            subprocess.run(install, env=env)
    if os.path.realpath(sys.executable) != os.path.realpath(system) and system_has_it():
        os.execv(system, [system] + sys.argv)
    sys.exit("bench/charts.py: needs matplotlib (apt-get install python3-matplotlib)")


need_matplotlib()

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

PLAIN = FuncFormatter(lambda x, _: "%g" % x)  # 0.5, 2, 10, 200: no 10^x on log axes

COLORS = {"tether": "#1f77b4"}
OTHER = "#d62728"


def color(side):
    return COLORS.get(side, OTHER)


def load(paths):
    """The comparing benches' results, and the cluster runs apart."""
    results, clusters = [], []
    for p in paths:
        with open(p) as f:
            data = json.load(f)
        for r in data if isinstance(data, list) else [data]:
            (clusters if r.get("bench") == "cluster" else results).append(r)
    return results, clusters


def percentiles(values):
    """Sorted values and their percentiles (0-100], for a CDF."""
    v = sorted(x for x in values if x is not None and x >= 0)
    n = len(v)
    return v, [100.0 * (i + 1) / n for i in range(n)]


def label(r):
    p = r.get("params", {})
    if r["scenario"] == "room":
        return "room: %s members, %s msg/s" % (p.get("members"), p.get("rate"))
    if r["scenario"] == "echo":
        return "echo: %s connections, %s-byte pings" % (p.get("conns"), p.get("size"))
    return r["scenario"]


def footer(fig, r):
    m = r.get("machine", {})
    text = "%s cores %s, %s" % (m.get("cpus"), m.get("cpu", ""), m.get("go", ""))
    if m.get("node"):
        text += ", node %s, socket.io %s" % (m.get("node"), m.get("socket_io", "?"))
    text += ", load %.1f, %s" % (m.get("load1", 0), r.get("time", ""))
    fig.text(0.01, 0.01, text, fontsize=7, color="#666")


def write(fig, out, name, r=None):
    """Saves fig as out/name (with the machine of result r at its foot)."""
    if r is not None:
        footer(fig, r)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
    else:
        fig.tight_layout()
    path = os.path.join(out, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_charts(results, out):
    written = []
    counts = {}
    for r in results:
        series = r.get("series") or {}
        if not any((series.get(s) or {}).get("latency_ms") for s in r["sides"]):
            continue
        counts[r["scenario"]] = counts.get(r["scenario"], 0) + 1
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for side in r["sides"]:
            lat = (series.get(side) or {}).get("latency_ms") or []
            v, pct = percentiles(lat)
            if v:
                p50, p99 = v[int(0.5 * (len(v) - 1))], v[min(len(v) - 1, int(0.99 * len(v)))]
                ax.step(v, pct, where="post", color=color(side), label="%s (p50 %.2f ms, p99 %.2f ms)" % (side, p50, p99))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(PLAIN)
        ax.set_xlabel("send to last member (ms)" if r["scenario"] == "room" else "round trip (ms)")
        ax.set_ylabel("percentile")
        ax.set_ylim(0, 100)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title("Latency distribution, " + label(r))
        written.append(write(fig, out, "latency-%s-%d.png" % (r["scenario"], counts[r["scenario"]]), r))
    return written


def rss_chart(results, out):
    idle = [r for r in results if r["scenario"] == "idle" and r.get("series")]
    if not idle:
        return []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for n, r in enumerate(idle):
        for side in r["sides"]:
            pts = (r["series"].get(side) or {}).get("rss") or []
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1] / (1 << 20) for p in pts]
            ax.plot(xs, ys, marker=".", color=color(side), alpha=1.0 if n == 0 else 0.5,
                    label=side if n == 0 else None)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("connections held")
    ax.set_ylabel("server RSS (MiB)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Server memory against idle WebSocket connections")
    return [write(fig, out, "rss.png", idle[-1])]


def row(r, metric):
    for x in r.get("rows", []):
        if x["metric"] == metric:
            return x
    return None


def cpu_chart(results, out):
    rooms = [r for r in results if r["scenario"] == "room" and row(r, "server CPU per delivery")]
    if not rooms:
        return []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sides = rooms[0]["sides"]
    for i, side in enumerate(sides):
        pts = sorted((r["params"]["members"], row(r, "server CPU per delivery")["tether" if i == 0 else "other"]) for r in rooms)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color(side), label=side)
    ax.set_xscale("log")
    sizes = sorted({r["params"]["members"] for r in rooms})
    ax.set_xticks(sizes)  # the sizes measured, and no other label
    ax.xaxis.set_major_formatter(PLAIN)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("members in the room")
    ax.set_ylabel("server CPU per delivery (µs)")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Room fan-out: server CPU per delivery against room size")
    return [write(fig, out, "cpu-per-delivery.png", rooms[-1])]


def ratio_chart(results, out):
    bars = []
    for r in results:
        for x in r.get("rows", []):
            if x.get("better") and x.get("other"):
                bars.append(("%s, %s vs %s" % (label(r), x["metric"], r["sides"][1]), x["ratio"], x["better"]))
    if not bars:
        return []
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(bars) + 1.5))
    ys = range(len(bars))
    def shade(b):
        if abs(b[1] - 1) < 0.02:
            return "#999999"  # the same
        return "#2ca02c" if (b[2] == "lower") == (b[1] < 1) else "#ff7f0e"

    good = [shade(b) for b in bars]
    ax.barh(list(ys), [b[1] for b in bars], color=good)
    ax.axvline(1, color="#333", lw=1)
    ax.set_yticks(list(ys))
    ax.set_yticklabels([b[0] for b in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("tether / the other (green: tether better, orange: worse, grey: the same)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(PLAIN)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.set_title("Every figure as a ratio")
    return [write(fig, out, "ratios.png")]


def cluster_charts(clusters, out):
    written = []
    for r in clusters:
        fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1, 1]})
        ax = axes[0]
        v, pct = percentiles(r.get("latency_ms") or [])
        if v:
            ax.step(v, pct, where="post", color=color("tether"),
                    label="p50 %.0f ms, p99 %.0f ms" % (r["p50_ms"], r["p99_ms"]))
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel("send to last member of the room (ms), per message")
        ax.set_ylabel("percentile")
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        nodes = ["n%d" % (i + 1) for i in range(r["nodes"])]
        ax = axes[1]
        ax.bar(nodes, [b / (1 << 20) for b in r.get("rss_bytes") or []], color=color("tether"))
        ax.set_ylabel("RSS at the end of the sends (MiB)")
        ax2 = ax.twinx()
        ax2.plot(nodes, r.get("cpu_seconds") or [], "o", color=OTHER)
        ax2.set_ylabel("CPU over the sends (s, dots)", color=OTHER)
        ax2.set_ylim(bottom=0)
        ax.set_title("per node: %.1f µs CPU per delivery in all" % r.get("cpu_per_delivery_us", 0), fontsize=9)
        ax = axes[2]
        gone = r.get("gone_after_ms") or {}
        ax.bar(["n%d" % (i + 1) for i in range(len(gone))], [gone[k] / 1000 for k in sorted(gone)], color="#7f7f7f")
        ax.set_ylabel("killed node's members dropped after (s)")
        ax.set_title("%d members of the killed node" % r.get("killed_members", 0), fontsize=9)
        fig.suptitle("Cluster: %d nodes, %d members in one room, %d messages at %d/s, %d of %d deliveries"
                     % (r["nodes"], r["members"], r["messages"], r["rate"], r["delivered"], r["members"] * r["messages"]))
        written.append(write(fig, out, "cluster-%dx%d.png" % (r["nodes"], r["members"]), r))
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="docs/bench")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    results, clusters = load(a.files)
    written = latency_charts(results, a.out_dir) + rss_chart(results, a.out_dir) + cpu_chart(results, a.out_dir) \
        + ratio_chart(results, a.out_dir) + cluster_charts(clusters, a.out_dir)
    if not written:
        sys.exit("bench/charts.py: nothing to draw in " + " ".join(a.files))
    for p in written:
        print(p)


if __name__ == "__main__":
    main()
