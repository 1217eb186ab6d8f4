"""Draws perplexity against evaluation length from the JSON of `dape eval` (one line per model).

    python3 tools/plot_eval.py EVAL.json OUT.png

The x axis is log2 of the length; a model's points are joined in length order. Exit 3 (one line on stderr)
when matplotlib is not installed (Debian: python3-matplotlib).
"""

import sys

from plotting import run


def draw(report, plt, out_path):
    curves = {}
    for r in report["results"]:
        label = "%s (%s)" % (r["pe"], r["checkpoint"])
        curves.setdefault(label, []).append((r["length"], r["ppl"]))
    lengths = sorted({r["length"] for r in report["results"]})

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, points in curves.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", linewidth=1.5, markersize=4,
                label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths)
    ax.set_xticklabels([str(n) for n in lengths])
    ax.set_xlabel("evaluation length L (tokens)")
    last = report.get("last", 0)
    ax.set_ylabel("perplexity (last %d tokens)" % last if last else "perplexity (all tokens)")
    ax.set_title("Length extrapolation: %s" % report.get("data", ""), fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path)


if __name__ == "__main__":
    sys.exit(run(sys.argv, "plot_eval.py EVAL.json OUT.png", draw))
