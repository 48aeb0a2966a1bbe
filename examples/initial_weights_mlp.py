"""Log the initial weights of a small PyTorch MLP (784-128-10) at step 0.

python examples/initial_weights_mlp.py runs/mlp-init
tensorboard --logdir runs/mlp-init
"""

from __future__ import annotations

import argparse

import torch

import tbweights


def build_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(784, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    )


def main(logdir: str) -> None:
    model = build_mlp()
    report = tbweights.log_weights(model, logdir, step=0)
    for result in report.results:
        stats = result.stats
        print(f"{result.tensor.name:10s} std {stats.std:.5f}  first {stats.first[:3]}")
    print(f"open it with: tensorboard --logdir {logdir}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Log the initial weights of a 784-128-10 MLP at step 0.")
    parser.add_argument("logdir", nargs="?", default="runs/mlp-init", help="log directory (default runs/mlp-init)")
    main(parser.parse_args().logdir)
