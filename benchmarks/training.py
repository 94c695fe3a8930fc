"""Fine-tuning cost: tokens per second of the shared trainer (descent) for the quick profile's model on C4 text.

Run: ``.venv/bin/python benchmarks/training.py [--device cpu|cuda] [--steps 3] [--batch-size 4]
[--seq-len 128] [--lora] [--threads N]``.
One warm-up step, then ``--steps`` timed optimizer steps of ``batch-size x seq-len`` tokens (the quick
profile's fine-tuning step: 4 x 128) with full-parameter updates, and with ``--lora`` the same with LoRA
adapters (rank 8, all linear layers). Prints seconds per step, tokens per second, peak memory, the
LoRA/full ratio and the quick study's fine-tuning time these figures imply.

``--alignment`` also times the Task2Vec side of the quick intervention study: one probe batch under the
study's own quick parameters (what the interventions use now: the corpora's and benchmarks' embeddings
come from ``corpus_task2vec``/``benchmark_task2vec``'s cache, only held-out C4 and C4-minus-held-out are
new) against the baseline the interventions used before (their own all-weights 4 x 8 x 128 embedding of
every corpus and target), and prints both totals and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from simassets.core import paths  # noqa: E402
from simassets.core.training import (BatchStream, LoraSpec, TrainConfig, Trainer, fresh_copy, mean_loss,  # noqa: E402
                                     pack_texts)


def load_model(device: str):
    """The quick profile's first model through the registry (the model the quick studies train)."""
    from simassets.core.models import load_causal_lm, load_registry, models_for_profile

    spec = models_for_profile(load_registry(), "quick")[0]
    return load_causal_lm(spec, device=device), spec.id


def c4_texts(n: int) -> list[str]:
    path = paths.data_root() / "corpora" / "c4_en.jsonl"
    with open(path, encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(n), fh)]
    if len(texts) < n:
        raise ValueError(f"{path}: only {len(texts)} documents, wanted {n}")
    return texts


def time_steps(model, blocks, cfg: TrainConfig, steps: int, direction: int = 1) -> tuple[list[float], int]:
    """Seconds of each of ``steps`` timed optimizer steps (after one warm-up) and the trainable parameters."""
    import torch

    trainer = Trainer(fresh_copy(model), cfg)
    stream = BatchStream(blocks.shape[0], cfg.batch_size, cfg.seed)
    times = []
    for i in range(steps + 1):
        batch = blocks[stream.next()]
        if cfg.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        trainer.step(batch, direction)
        if cfg.device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    return times, trainer.trainable_parameters


def time_loss(model, blocks, repeats: int = 2) -> float:
    """Seconds of one loss measurement over ``blocks`` (no gradients), best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mean_loss(model, blocks)
        best = min(best, time.perf_counter() - t)
    return best


def peak_memory(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"peak GPU {torch.cuda.max_memory_allocated() / 1e9:.2f} GB"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB"


def arguments(description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps (after one warm-up)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lora", action="store_true", help="also time LoRA (rank 8) updates")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--alignment", action="store_true",
                    help="also time the quick interventions' Task2Vec embeddings against the all-weights baseline")
    return ap.parse_args()


def setup(args: argparse.Namespace):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    loaded, model_id = load_model(args.device)
    cfg = TrainConfig(lr=5e-5, seq_len=args.seq_len, batch_size=args.batch_size, device=args.device)
    blocks = pack_texts(loaded.tokenizer, c4_texts(200), cfg.seq_len, seed=0)
    print(f"{model_id} on {args.device} ({loaded.n_params:,} parameters) loaded in {time.perf_counter() - start:.1f} s; "
          f"torch threads {torch.get_num_threads()}; step = {cfg.batch_size} x {cfg.seq_len} tokens "
          f"(micro-batches of {cfg.micro}); {blocks.shape[0]} C4 blocks", flush=True)
    return loaded, cfg, blocks


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    loaded, cfg, blocks = setup(args)
    runs = {"full": cfg} | ({"lora": replace(cfg, lora=LoraSpec())} if args.lora else {})
    per_step = {}
    for name, c in runs.items():
        times, trainable = time_steps(loaded.model, blocks, c, args.steps)
        per_step[name] = sum(times) / len(times)
        print(f"{name:<5} trainable {trainable:>12,}  s/step mean {per_step[name]:.2f}  best {min(times):.2f}  "
              f"tokens/s {c.tokens_per_step / per_step[name]:,.0f}  {peak_memory(args.device)}", flush=True)
    if "lora" in per_step:
        print(f"LoRA / full seconds per step: {per_step['lora'] / per_step['full']:.2f}")
    from simassets.defs.interventions import SETUP

    quick = SETUP["quick"].finetune
    if (quick.train.batch_size, quick.train.seq_len) == (cfg.batch_size, cfg.seq_len):
        print(f"quick interventions: {quick.steps} steps x 5 corpora = {5 * quick.steps * per_step['full'] / 60:.1f} min "
              "of full-parameter training (target losses and Task2Vec not included)")
    if args.alignment:
        alignment_cost(loaded)


def alignment_cost(loaded) -> None:
    """Task2Vec seconds of the quick intervention study: its setup now vs the all-weights baseline."""
    from simassets.core.catalog import load_catalog
    from simassets.core.measures.task2vec import Task2VecParams, batch_embedding, draw_batch
    from simassets.defs.interventions import SETUP
    from simassets.core.measures.task2vec import task2vec_params

    catalog = load_catalog()
    seed, n_corpora = catalog.profile("quick").seed, len(catalog.corpora_for("quick"))
    if SETUP["quick"].task2vec is not None:
        raise SystemExit("this comparison assumes the quick interventions use the study's own Task2Vec parameters")
    now = task2vec_params("quick", seed)
    before = Task2VecParams(seed=seed)  # the interventions' former default: all weights, 4 batches x 8 x 128
    texts = c4_texts(200)
    n_targets = len(SETUP["quick"].targets)
    per_batch = {}
    for name, params in (("now", now), ("before", before)):
        batch_embedding(loaded.model, loaded.tokenizer, draw_batch(texts, params.batch_size, seed, 0), params, 0)  # warm-up
        t = time.perf_counter()
        batch_embedding(loaded.model, loaded.tokenizer, draw_batch(texts, params.batch_size, seed, 1), params, 1)
        per_batch[name] = time.perf_counter() - t
        print(f"Task2Vec {name:<6} {params.parameters:<10} {params.batch_size} x {params.seq_len} tokens: "
              f"{per_batch[name]:.2f} s/batch", flush=True)
    # now: only the held-out C4 target and C4 minus its held-out part are new datasets; before: every
    # training corpus and every target (each embedded once, then cached)
    total_now = 2 * now.n_batches * per_batch["now"]
    total_before = (n_corpora + n_targets) * before.n_batches * per_batch["before"]
    print(f"quick interventions' Task2Vec: now {2 * now.n_batches} batches = {total_now:.0f} s; before "
          f"{(n_corpora + n_targets) * before.n_batches} batches = {total_before:.0f} s; "
          f"before / now = {total_before / total_now:.1f}x")


if __name__ == "__main__":
    main()
