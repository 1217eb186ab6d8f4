"""The loss `dape eval` reports, computed in PyTorch: the mean NLL of the last K positions of the first N
non-overlapping windows of L+1 tokens of a text file read with the byte tokenizer (DAPE-SPEC §5.1).

    python3 torch_eval.py oracle WEIGHTS.h5 TEXT L K N   # tests/oracle/gpt_oracle.py, float64
    python3 torch_eval.py export MODEL.pt   TEXT L K N [WEIGHTS.h5]
                                                         # tools/dape_torch.py on a `dape export`, float32;
                                                         # with WEIGHTS.h5, first checks that MODEL.pt holds
                                                         # exactly its tensors (names, shapes, float32)

Prints the loss. K = 0 or L <= K scores every position. Used by tests/launcher/test_eval.cpp and
test_export.cpp.
"""

import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "oracle"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))


def windows(text_path, L, N):
    with open(text_path, "rb") as f:
        tokens = torch.tensor(list(f.read()), dtype=torch.long)
    rows = [tokens[w * L: w * L + L + 1] for w in range(N)]
    assert all(len(r) == L + 1 for r in rows), "the text is too short for %d windows of %d+1" % (N, L)
    batch = torch.stack(rows)
    return batch[:, :-1], batch[:, 1:]


def check_state_dict(pt_path, h5_path):
    import h5py
    state = torch.load(pt_path)
    with h5py.File(h5_path, "r") as f:
        shapes = {name: f[name].shape for name in f}
    assert sorted(state) == sorted(shapes), (sorted(state), sorted(shapes))
    for name, t in state.items():
        assert tuple(t.shape) == shapes[name] and t.dtype == torch.float32, (name, t.shape, t.dtype)


def main(argv):
    mode, model_path, text, L, K, N = argv[1], argv[2], argv[3], int(argv[4]), int(argv[5]), int(argv[6])
    inputs, targets = windows(text, L, N)
    with torch.no_grad():
        if mode == "oracle":
            import gpt_oracle
            logits = gpt_oracle.forward(gpt_oracle.load_model(model_path), inputs.numpy())
            losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                     reduction="none").view(N, L)
        elif mode == "export":
            import dape_torch
            if len(argv) > 7:
                check_state_dict(model_path, argv[7])
            losses = dape_torch.load(model_path).position_losses(inputs, targets).double()
        else:
            raise SystemExit("mode must be oracle or export")
    if 0 < K < L:
        losses = losses[:, L - K:]
    print(repr(float(losses.mean())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
