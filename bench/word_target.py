"""What the sequence-level word target costs: the reference's tree pass (likex.word_target) at
K positions per window, against a plain forward pass of the same windows and a training step's
forward and backward of the model, measured in the same process.

    python bench/word_target.py [--model smollm2-135m] [--k 0 2 4 8 16] [--repeats 3] [--json]

The windows are the pretrained defaults (4 x 64 tokens of the built-in corpus, every
position); the list is docs/targets.md's five brands and "Heineken" (a first token that is a
word). Each time is the median of ``--repeats`` calls after one warm-up. The load average is
printed with the numbers: on a shared machine it inflates them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from likex.data import BUILTIN_CORPUS, corpus_split, corpus_windows, step_generator
from likex.models.hf import token_strings_for
from likex.models.start import parse_start
from likex.target import TargetSpec, select_tokens
from likex.word_target import Strength, sample_positions, word_positions, word_target_log
from likex.words import allowed_starts

BRANDS = ("Coca-Cola", "Mitsubishi", "Kellogg", "Kawasaki", "Kodak", "Heineken")


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--k", type=int, nargs="+", default=[0, 2, 4, 8, 16])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tokenizer = parse_start(args.model).load("cpu")
    model.eval()
    block = model.config.block_size
    targets = select_tokens(
        TargetSpec(words=BRANDS), token_strings_for(model, tokenizer), tokenizer.encode, block
    )
    trie = targets.words
    train, _ = corpus_split(BUILTIN_CORPUS, tokenizer, block)
    length = min(args.length, block - trie.depth)  # room for the entries after the window
    idx = corpus_windows(train, args.batch, length, step_generator(0, 1, 0))[:, :-1]
    rows: dict = {
        "model": args.model,
        "windows": list(idx.shape),
        "trie_nodes": int(trie.paths.shape[0]),
        "load_before": os.getloadavg()[0],
    }
    with torch.no_grad():
        rows["plain_forward_s"] = timed(lambda: model(idx, positions="all"), args.repeats)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(idx, positions="all").logsumexp(-1).mean().backward()

    model.train()
    rows["forward_backward_s"] = timed(step, args.repeats)
    model.eval()
    for k in args.k:
        pos = sample_positions(idx, k, "all")
        where = word_positions(trie, idx, pos)
        first = trie.paths.gather(1, (trie.depth - trie.node_depth)[:, None])[:, 0]
        allowed = allowed_starts(trie, idx.gather(1, where.at.clamp(min=0)))
        include = (allowed & (where.at >= 0)[..., None])[..., first]
        rows[f"k{k}"] = {
            "positions": int(pos.shape[1]),
            "branch_positions": int((where.at >= 0).sum()),
            "tree_tokens": int(include.sum()),
            "seconds": timed(
                lambda pos=pos: word_target_log(model, trie, idx, pos, Strength(rate=0.2)),
                args.repeats,
            ),
        }
    rows["load_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(
        f"{args.model}: windows {rows['windows']}, {rows['trie_nodes']} trie nodes, load "
        f"{rows['load_before']:.1f} -> {rows['load_after']:.1f}"
    )
    print(f"  plain forward (R without the word target) {rows['plain_forward_s']:.2f} s")
    print(f"  the model's forward + backward             {rows['forward_backward_s']:.2f} s")
    for k in args.k:
        r = rows[f"k{k}"]
        print(
            f"  K = {k:>2} ({r['positions']} positions, {r['branch_positions']} branch positions, "
            f"{r['tree_tokens']} tree tokens): R's pass {r['seconds']:.2f} s"
        )


if __name__ == "__main__":
    main()
