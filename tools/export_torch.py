"""Writes a dape weight file as a PyTorch state_dict: run by `dape export` (docs/export.md).

    python3 tools/export_torch.py WEIGHTS.h5 OUT.pt

WEIGHTS.h5 is a weight file (tensors at the root) or a checkpoint's state.h5 (tensors under model/). OUT.pt
receives the state_dict of dape_torch.DapeGPT (the weight-file tensor names, float32) and OUT.json the model
config. The tensors are loaded into DapeGPT with strict=True first, so every name and shape is checked.
Exit 3 (one line on stderr) when torch or h5py is not installed.
"""

import json
import os
import sys

MISSING_MODULE = 3


def main(argv):
    if len(argv) != 3:
        print("usage: export_torch.py WEIGHTS.h5 OUT.pt", file=sys.stderr)
        return 2
    try:
        import h5py  # noqa: F401
        import torch
    except ImportError as e:
        print("python module %s is not installed (needed: python3-torch, python3-h5py)" % e.name,
              file=sys.stderr)
        return MISSING_MODULE
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import dape_torch

    src, out = argv[1], argv[2]
    config, tensors = dape_torch.read_h5(src)
    model = dape_torch.DapeGPT(config)
    model.load_state_dict({name: torch.as_tensor(value) for name, value in tensors.items()}, strict=True)
    state = model.state_dict()
    config_out = dape_torch.config_path_for(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    for path, write in ((out, lambda f: torch.save(state, f)),
                        (config_out, lambda f: f.write((json.dumps(config, indent=2)
                                                        + "\n").encode()))):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    n = sum(t.numel() for t in state.values())
    print("%d tensors, %d parameters; config %s" % (len(state), n, config_out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
