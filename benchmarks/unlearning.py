"""Unlearning cost: seconds per optimisation step of gradient ascent for the quick profile's model, and of
the three loss measurements (target, shuffled reference, retain) taken after every ascent step.

Run: ``.venv/bin/python benchmarks/unlearning.py [--device cpu|cuda] [--steps 3] [--batch-size 4]
[--seq-len 128] [--lora] [--threads N]``.
Defaults are the quick profile's unlearning step (4 x 128 tokens, 4 blocks per loss measurement). Prints
seconds per ascent step (full-parameter, and LoRA with ``--lora``), seconds per loss measurement and
per unlearning step (ascent + 3 measurements; repairs add a descent step + 1 measurement each), and the
time the quick profile's step budget implies per corpus (without the re-evaluation on the benchmarks).
"""

from __future__ import annotations

import os
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training import arguments, peak_memory, setup, time_loss, time_steps  # noqa: E402  (benchmarks/training.py)

from simassets.core.training import LoraSpec  # noqa: E402


def main() -> None:
    from simassets.defs.attribution import SETUP

    args = arguments(__doc__.splitlines()[0])
    loaded, cfg, blocks = setup(args)
    quick = SETUP["quick"].unlearn
    measure = time_loss(loaded.model, blocks[: quick.eval_blocks])
    print(f"loss measurement over {quick.eval_blocks} blocks: {measure:.2f} s", flush=True)
    runs = {"full": cfg} | ({"lora": replace(cfg, lora=LoraSpec())} if args.lora else {})
    for name, c in runs.items():
        times, trainable = time_steps(loaded.model, blocks, c, args.steps, direction=-1)
        step = sum(times) / len(times)
        unlearn_step = step + 3 * measure
        print(f"{name:<5} trainable {trainable:>12,}  ascent s/step mean {step:.2f}  best {min(times):.2f}  "
              f"tokens/s {c.tokens_per_step / step:,.0f}  unlearning step (ascent + 3 losses) {unlearn_step:.2f} s  "
              f"quick budget ({quick.max_steps} steps) <= {quick.max_steps * unlearn_step / 60:.1f} min/corpus without repairs  "
              f"{peak_memory(args.device)}", flush=True)


if __name__ == "__main__":
    main()
