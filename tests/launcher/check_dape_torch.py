"""tools/dape_torch.py against the float64 oracle (tests/oracle/gpt_oracle.py) for every positional
encoding, DAPE variant and activation, causal and bidirectional, and for every positional encoding on the
CHE encoder's backbone (post-LN, ReLU, scaled embedding, no attention biases, a classifier head with a
bias) with randomized positions, drawn by DapeGPT.sample_positions and given to both: the same random
weights must give the same logits, and on the CHE backbone the same loss with ignored targets. Run by
tests/launcher/test_export.cpp; prints one line per config and exits 1 on a mismatch.

    python3 tests/launcher/check_dape_torch.py
"""

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "oracle"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import dape_torch  # noqa: E402
import gpt_oracle  # noqa: E402

TOLERANCE = 1e-10  # float64 on both sides; only the summation order differs


def che_configs():
    """The CHE encoder (launcher/che.cpp) in small, for every positional encoding."""
    for pe in dape_torch.PES:
        yield {"model": {"n_layers": 2, "d_model": 16, "n_heads": 4, "vocab_size": 23, "pe": pe,
                         "causal": False, "dape": {"variant": "concat_residual", "width": 8,
                                                   "activation": "leaky_relu"},
                         "fire": {"width": 8, "L0": 7}, "norm": "post", "mlp_activation": "relu",
                         "scale_embedding": True, "attention_bias": False, "head_bias": True,
                         "output_size": 5, "dropout": 0.1, "randomized_positions": 256, "init": "che"}}


def configs():
    for causal in (True, False):
        for pe in dape_torch.PES:
            variants = ["concat_residual"]
            if pe.startswith("dape-") and pe != "dape-nope":
                variants += ["concat", "add_residual"]
            for variant in variants:
                activations = ["leaky_relu"] + (["gelu"] if variant == "concat_residual" and pe.startswith("dape-")
                                                else [])
                for activation in activations:
                    yield {"model": {"n_layers": 2, "d_model": 16, "n_heads": 4, "vocab_size": 23, "pe": pe,
                                     "causal": causal,
                                     "dape": {"variant": variant, "width": 8, "activation": activation},
                                     "fire": {"width": 8, "L0": 7}}}
    yield from che_configs()


def main():
    torch.manual_seed(0)
    worst = 0.0
    failed = 0
    T = 150  # beyond the T5 saturation distance (113) and the FIRE threshold
    for i, config in enumerate(configs()):
        oracle = gpt_oracle.random_model(config, seed=i)
        model = dape_torch.DapeGPT(config).double()
        model.load_state_dict({k: v.detach() for k, v in oracle.params.items()}, strict=True)
        m = config["model"]
        che = m.get("norm") == "post"
        tokens = torch.randint(0, 23, (2, T))
        positions = model.sample_positions(T) if che else None
        with torch.no_grad():
            want = gpt_oracle.forward(oracle, tokens.numpy(), positions)
            got = model(tokens, positions)
        err = float((got - want).abs().max() / want.abs().max())
        if che:
            # Targets: 5 classes, every third position ignored.
            targets = torch.randint(0, 5, (2, T))
            targets[:, ::3] = -1
            with torch.no_grad():
                want_loss = float(gpt_oracle.loss_value(oracle, tokens.numpy(), targets.numpy(), positions))
                got_loss = float(model.loss(tokens, targets, positions=positions))
            err = max(err, abs(got_loss - want_loss) / abs(want_loss))
            if positions is not None:
                try:
                    model(tokens)
                    err = float("inf")  # randomized positions must be given
                except ValueError:
                    pass
        worst = max(worst, err)
        ok = err <= TOLERANCE
        failed += not ok
        print("%-4s %-12s %-16s %-10s %s rel err %.2e" % ("ok" if ok else "FAIL", m["pe"], m["dape"]["variant"],
                                                         m["dape"]["activation"],
                                                         ("bidir  CHE" if che else
                                                          "causal" if m["causal"] else "bidir "), err))
    print("worst relative error %.2e over all configs; %d failed" % (worst, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
