"""What the plotting helpers share: argument checking and matplotlib without a display.

Each plot script calls `run(argv, usage, draw)`: with exactly two arguments (an input JSON and the output PNG)
it loads the JSON, imports pyplot headless and calls `draw(data, plt, out_path)`. A missing matplotlib exits
with MISSING_MODULE (3) after one line on stderr, which `dape` turns into a note on what to install.
"""

import json
import sys

MISSING_MODULE = 3


def run(argv, usage, draw):
    if len(argv) != 3:
        print("usage: " + usage, file=sys.stderr)
        return 2
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("python module matplotlib is not installed", file=sys.stderr)
        return MISSING_MODULE
    with open(argv[1]) as f:
        data = json.load(f)
    draw(data, plt, argv[2])
    return 0
