"""Draws the paper's Figure 1 from the JSON of `dape visualize`: for one query, over the keys j, the
attention scores s(i, j), the positional bias b(i, j) and the DAPE output f(s, b)(i, j), one panel each,
one line per head.

    python3 tools/plot_attention.py CURVES.json OUT.png

Exit 3 (one line on stderr) when matplotlib is not installed (Debian: python3-matplotlib).
"""

import sys

from plotting import run


def draw(c, plt, out_path):
    keys = list(range(c["n_keys"]))
    panels = [("scores", "attention score $s(i,j)$", True),
              ("bias", "bias $b(i,j)$", c["has_bias"]),
              ("dape", "DAPE output $f(s,b)(i,j)$", c["has_dape"])]
    fig, axes = plt.subplots(3, 1, figsize=(7.0, 7.0), dpi=100, sharex=True)
    for ax, (field, title, present) in zip(axes, panels):
        for h, values in zip(c["heads"], c[field]):
            ax.plot(keys, values, linewidth=1.0, label="head %d" % h)
        ax.set_title(title if present else title + " (none for %s: zeros)" % c["pe"], fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, ncol=min(4, len(c["heads"])))
    axes[-1].set_xlabel("key position j")
    fig.suptitle("%s: layer %d, query i = %d of a window of %d tokens" %
                 (c["pe"], c["layer"], c["query"], c["length"]), fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path)


if __name__ == "__main__":
    sys.exit(run(sys.argv, "plot_attention.py CURVES.json OUT.png", draw))
