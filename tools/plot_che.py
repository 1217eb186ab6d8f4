"""Draws per-length accuracy from the che_eval.json of `dape che eval`.

    python3 tools/plot_che.py CHE_EVAL.json OUT.png

The shaded band marks the training lengths; the dashed line is the task's chance level. Exit 3 (one line on
stderr) when matplotlib is not installed (Debian: python3-matplotlib).
"""

import sys

from plotting import run


def draw(e, plt, out_path):
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.axvspan(0.5, e["max_train_length"] + 0.5, color="0.9", label="training lengths")
    ax.plot(e["lengths"], [100 * a for a in e["accuracy"]], marker=".", label=e["pe"])
    ax.axhline(100 * e["chance"], color="0.4", linestyle="--", linewidth=1, label="chance")
    ax.set_xlabel("length n")
    ax.set_ylabel("per-token accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("{} / {} (seed {}): {:.1f}% beyond training".format(
        e["task"], e["pe"], e["seed"], 100 * e["ood_mean"]))
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)


if __name__ == "__main__":
    sys.exit(run(sys.argv, "plot_che.py CHE_EVAL.json OUT.png", draw))
