#!/usr/bin/python3
"""bench/plot.py - draws bench/run.sh's results (the tagged JSON lines it
keeps, or a --raw file) as throughput against block size: te-bench over tcp
and over shm, single-thread memcpy of the same blocks, and iperf3 on one
stream (one figure for every size, drawn as a line).  Medians of the runs,
with the min-max range as error bars.

    /usr/bin/python3 bench/plot.py RESULTS.tsv OUT.png [OPERATION] [REPEAT]

Needs matplotlib (Debian: apt-get install python3-matplotlib).
"""
import json
import statistics
import sys

try:
    import matplotlib
except ImportError:
    sys.exit("bench/plot.py: matplotlib is missing; install it with: "
             "apt-get install python3-matplotlib")
matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            tag, _, text = line.rstrip("\n").partition("\t")
            try:
                value = json.loads(text).get("throughput_gbps")
            except ValueError:
                continue
            if isinstance(value, (int, float)):
                runs.setdefault(tag, []).append(value)
    return runs


def series(runs, name):
    """(sizes, medians, lower errors, upper errors) of the tags name/SIZE."""
    pts = sorted((int(t.split("/")[1]), v) for t, v in runs.items()
                 if t.startswith(name + "/"))
    sizes = [b for b, _ in pts]
    med = [statistics.median(v) for _, v in pts]
    lo = [m - min(v) for m, (_, v) in zip(med, pts)]
    hi = [max(v) - m for m, (_, v) in zip(med, pts)]
    return sizes, med, lo, hi


def label(n):
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or n % 1024:
            return f"{n}{unit}"
        n //= 1024
    return f"{n}T"


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, out = sys.argv[1], sys.argv[2]
    operation = sys.argv[3] if len(sys.argv) > 3 else "write"
    repeat = sys.argv[4] if len(sys.argv) > 4 else "?"
    runs = load(path)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    all_sizes = set()
    for name, what, style in (("tcp", "te-bench tcp", "o-"), ("shm", "te-bench shm", "s-"),
                              ("memcpy", "memcpy (1 thread)", "^--")):
        sizes, med, lo, hi = series(runs, name)
        if sizes:
            ax.errorbar(sizes, med, yerr=[lo, hi], fmt=style, capsize=3, label=what)
            all_sizes.update(sizes)
    if runs.get("iperf3"):
        ax.axhline(statistics.median(runs["iperf3"]), color="grey", linestyle=":",
                   label="iperf3, 1 stream")
    if not all_sizes:
        sys.exit(f"bench/plot.py: no te-bench or memcpy results in {path}")
    ax.set_xscale("log", base=2)
    ticks = sorted(all_sizes)
    ax.set_xticks(ticks)
    ax.set_xticklabels([label(b) for b in ticks])
    ax.set_xlabel("block size (batch of 128 blocks)")
    ax.set_ylabel("GB/s (1e9 bytes/s)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{operation} throughput on one host, loopback (median of {repeat} runs)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(out)
    print(f"bench/plot.py: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
