"""A module that parses its arguments when imported, as many training scripts do."""

import argparse
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
ARGS = parser.parse_args()


def train(rank: int, *words: str) -> None:
    sys.stdout.write(f"rank {rank} lr {ARGS.lr} argv {sys.argv[1:]}\n")
    sys.stdout.flush()


def evaluate(rank: int) -> None:
    pass
