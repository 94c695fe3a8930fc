"""torch's fp32 GEMM against oneDNN's, side by side: the matrix products, then whole forward passes.

``simassets.core.kernels`` routes fp32 ``nn.Linear`` layers on CPU through oneDNN when it is faster than torch's own
GEMM (MKL in the CPU wheels). This prints, in one process and alternating the two, GFLOP/s of both on the linear
products of SmolLM2-135M (a 256-token row) and all-MiniLM-L6-v2, then the seconds of a SmolLM2 forward pass (4 x 256
tokens, logits at every position) and of embedding 256 C4 documents with MiniLM, each with both kernels, the ratio,
and the largest difference of the outputs. Run it on a quiet machine.

    .venv/bin/python benchmarks/cpu_linear.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHAPES = {  # (rows, in, out): the linear products of one 256-token row
    "SmolLM2 q/o proj": (256, 576, 576), "SmolLM2 k/v proj": (256, 576, 192),
    "SmolLM2 gate/up": (256, 576, 1536), "SmolLM2 down": (256, 1536, 576),
    "MiniLM attention": (256, 384, 384), "MiniLM intermediate": (256, 384, 1536), "MiniLM output": (256, 1536, 384),
}


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as in a worker of simassets run)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from simassets.core import kernels, paths

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); oneDNN available: "
          f"{torch.backends.mkldnn.is_available()}; the process's choice: {kernels.cpu_linear_backend()}")
    with torch.no_grad():
        for name, (m, k, n) in SHAPES.items():
            x, w = torch.randn(m, k), torch.randn(n, k)
            flops = 2 * m * k * n
            aten = onednn = 0.0
            for _ in range(args.repeats):
                aten += timed(lambda: F.linear(x, w), 20)
                onednn += timed(lambda: kernels._pointwise(x, w, None), 20)
            diff = float((kernels._pointwise(x, w, None) - F.linear(x, w)).abs().max() / F.linear(x, w).abs().max())
            print(f"{name:22s} {m}x{k}x{n}: torch {flops * args.repeats / aten / 1e9:6.0f} GFLOP/s, oneDNN "
                  f"{flops * args.repeats / onednn / 1e9:6.0f} GFLOP/s: {aten / onednn:.2f}x; largest difference "
                  f"{diff:.1e} (relative)", flush=True)

    from simassets.core.embeddings import _load_model, resolve_model
    from simassets.core.models import load_causal_lm, load_registry

    loaded = load_causal_lm(load_registry()["smollm2-135m-instruct"])
    fast = loaded.model if loaded.linear_backend == "onednn" else kernels_forced(loaded.model)
    plain = kernels.plain_linears(copy.deepcopy(fast))
    ids = torch.randint(0, plain.config.vocab_size, (4, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = timed(lambda: plain(input_ids=ids).logits, args.repeats)
        b = timed(lambda: fast(input_ids=ids).logits, args.repeats)
        diff = float((fast(input_ids=ids).logits - plain(input_ids=ids).logits).abs().max())
    print(f"SmolLM2 forward, 4 x 256 tokens: torch {a:.2f} s, oneDNN {b:.2f} s: {a / b:.2f}x "
          f"({1024 / a:.0f} against {1024 / b:.0f} tokens/s); largest logit difference {diff:.1e}", flush=True)

    src = resolve_model()
    embedder = _load_model(src.location, src.is_local, "cpu", None)
    plain_e = kernels.plain_linears(copy.deepcopy(embedder))
    fast_e = embedder if any("forward" in vars(m) for m in embedder.modules()) else kernels_forced(embedder)
    with open(paths.data_root() / "corpora" / "c4_en.jsonl", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(256), fh)]
    a = timed(lambda: plain_e.encode(texts, batch_size=32, convert_to_numpy=True), 1)
    b = timed(lambda: fast_e.encode(texts, batch_size=32, convert_to_numpy=True), 1)
    diff = float(abs(fast_e.encode(texts[:32]) - plain_e.encode(texts[:32])).max())
    print(f"MiniLM, 256 C4 documents: torch {a:.2f} s, oneDNN {b:.2f} s: {a / b:.2f}x; largest embedding difference "
          f"{diff:.1e}")


def kernels_forced(model):
    """``model`` with oneDNN linear layers even where the process chose torch's GEMM (to time both anyway)."""
    from simassets.core import kernels

    chosen = list(kernels._CHOSEN)
    kernels._CHOSEN[:] = ["onednn"]
    try:
        kernels.fast_linears(model)
    finally:
        kernels._CHOSEN[:] = chosen
    return model


if __name__ == "__main__":
    main()
