"""Training throughput of GPT-BERT (ours) vs HF BERT / GPT-2 of the same size, on this machine.

Each configuration runs in its own subprocess (so its peak RSS is its own):
forward + backward + optimizer step on random tokens, a mixed hybrid batch
(1 causal row in 16, ~30% MNTP targets elsewhere), small preset
(12 x 384, 6 heads, vocab 8192). Prints a table, then one JSON line:

  python bench/train_throughput.py            # full: more repeats
  python bench/train_throughput.py --quick    # < 3 minutes
  python bench/train_throughput.py --quick --rounds 3 --configs small_t128_bf16,hf_bert_t128_bf16
                                              # interleaved rounds, medians and per-round ratios
  python bench/train_throughput.py --paired small_t128_bf16,hf_bert_t128_bf16 --steps 10
                                              # both in one process, steps alternating: per-pair ratios

`--official DIR` adds the official implementation (a checkout of github.com/ltgoslo/gpt-bert; its
`pretraining/model_extra.py` is imported from there at run time, never copied here). On a CPU
without native bf16 matmuls (AVX2 only) the bf16 configurations are skipped: their matmuls fall
to a slow scalar loop (docs/performance.md); `--configs` picks configurations by name.

MFU is against the bf16 / fp32 matmul peak the script measures itself at the
model's shapes (4096 x 384 @ 384 x 2560), so it is a fraction of what this
machine can actually do, not of a datasheet number. fp32 runs route their
matmuls through oneDNN as `gptbert train` does (gptbert/precision.py; a no-op on
AMX CPUs); `small_t128_fp32_mkl` is the same run on PyTorch's default GEMM.

Our configurations set glibc's allocator as `gptbert train` does (`memory.keep_freed_pages`: freed
tensors' pages stay mapped for the next step); `small_t128_bf16_default_malloc` is the same run with
glibc's defaults. HF and official configurations run with glibc's defaults, as their users run
them, except those named `*_keep_pages`, which get the same allocator setting as ours, so that
ratio compares the models alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpuinfo import cpu_name  # noqa: E402

CONFIGS = {
    # name: (implementation, precision, batch, seq_length, compile, fp32 matmuls via oneDNN)
    "small_t128_fp32": ("ours", "fp32", 32, 128, False, True),
    "small_t128_fp32_mkl": ("ours", "fp32", 32, 128, False, False),
    "small_t128_bf16": ("ours", "bf16", 32, 128, False, True),
    "small_t128_bf16_default_malloc": ("ours", "bf16", 32, 128, False, True),  # glibc's default allocator
    "small_t128_bf16_compiled": ("ours", "bf16", 32, 128, True, True),
    "small_t512_bf16": ("ours", "bf16", 8, 512, False, True),
    "small_t512_bf16_recompute": ("ours", "bf16", 8, 512, False, True),  # --train.recompute_attention
    "hf_bert_t128_fp32": ("hf_bert", "fp32", 32, 128, False, True),
    "hf_bert_t128_bf16": ("hf_bert", "bf16", 32, 128, False, True),
    "hf_bert_t128_bf16_keep_pages": ("hf_bert", "bf16", 32, 128, False, True),  # our allocator setting
    "hf_bert_t128_fp32_keep_pages": ("hf_bert", "fp32", 32, 128, False, True),
    "hf_gpt2_t128_bf16": ("hf_gpt2", "bf16", 32, 128, False, True),
    "small_t512_fp32": ("ours", "fp32", 8, 512, False, True),
    "hf_bert_t512_fp32": ("hf_bert", "fp32", 8, 512, False, True),
    # the official ltgoslo/gpt-bert pretraining/model_extra.py, same size (needs --official DIR)
    "official_t128_fp32": ("official", "fp32", 32, 128, False, True),
    "official_t128_bf16": ("official", "bf16", 32, 128, False, True),
    "official_t512_fp32": ("official", "fp32", 8, 512, False, True),
}


def matmul_peak(dtype_name: str, seconds: float = 2.0) -> float:
    """GFLOP/s of one (4096 x 384) @ (384 x 2560) matmul; "fp32" is the faster of MKL and oneDNN.

    The product goes into one preallocated tensor: a fresh 21-42 MB output per call would time the
    kernel's page faults too (glibc maps blocks that large on their own by default)."""
    import torch

    from gptbert.precision import fp32_matmul_via_onednn

    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    a, b = torch.randn(4096, 384, dtype=dtype), torch.randn(384, 2560, dtype=dtype)
    out = torch.empty(4096, 2560, dtype=dtype)
    best = 0.0
    for onednn in ((False, True) if dtype_name == "fp32" else (False,)):
        with fp32_matmul_via_onednn(enabled=onednn):
            for _ in range(3):
                torch.matmul(a, b, out=out)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 2:
                torch.matmul(a, b, out=out)
                n += 1
            best = max(best, 2 * 4096 * 384 * 2560 * n / (time.perf_counter() - t0))
    return best




def build(impl: str, official: str | None = None):

    if impl == "ours":
        from gptbert.config import model_preset
        from gptbert.model import GPTBERT

        return GPTBERT(model_preset("small"))
    if impl == "official":
        import types

        sys.path.insert(0, os.path.join(official, "pretraining"))
        import model_extra  # the official code, from the checkout named by --official

        cfg = json.load(open(os.path.join(official, "configs", "small.json")))
        return model_extra.Bert(types.SimpleNamespace(**cfg))
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    if impl == "hf_bert":
        return BertForMaskedLM(BertConfig(vocab_size=8192, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                          intermediate_size=1536, max_position_embeddings=512, attn_implementation="sdpa"))
    return GPT2LMHeadModel(GPT2Config(vocab_size=8192, n_embd=384, n_layer=12, n_head=6, n_positions=512,
                                      attn_implementation="sdpa"))


def data_pipeline(steps: int) -> dict:
    """Batch building (windows, causal rows, span masking) of the small preset's T=128 steps, read
    through a DataLoader with one worker process, as `gptbert train` does. Random tokens."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch

    from gptbert.config import ModelConfig, RunConfig, TrainConfig, model_preset
    from gptbert.data import TrainBatches

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        tokens = rng.integers(16, 8192, 4_000_000, dtype=np.uint16)
        tokens[::400] = 1  # a document start every 400 tokens
        tokens.tofile(Path(tmp) / "train.bin")
        cfg = RunConfig(model=ModelConfig(**{**model_preset("small").__dict__, "vocab_size": 8192}),
                        train=TrainConfig(data=tmp, max_steps=100_000, global_batch_tokens=32 * 128,
                                          micro_batch_size=32, seq_length=128, batch_ramp=False,
                                          seq_schedule=False))
        batches = TrainBatches(tmp, cfg)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(batches, range(steps + 8)), batch_size=None,
                                             num_workers=1, prefetch_factor=4)
        it = iter(loader)
        for _ in range(8):  # worker start-up and first batches
            next(it)
        t0 = time.perf_counter()
        n = sum(mb.input_ids.numel() for _ in range(steps) for mb in next(it))
        dt = time.perf_counter() - t0
    return dict(name="data_pipeline_worker", tok_s=n / dt, steps=steps)


def prepare(name: str, official: str | None = None):
    """(step, info): one training step of configuration `name` (forward, backward, optimizer) and its
    tokens, FLOPs per token, parameters and precision. Sets the allocator as the configuration's users
    run it (process-wide: `--paired` sets it once, for ours)."""
    import torch

    from gptbert import memory
    from gptbert.precision import fp32_matmul_via_onednn

    impl, precision, B, T, compile_, onednn = CONFIGS[name]
    if (impl == "ours" and not name.endswith("_default_malloc")) or name.endswith("_keep_pages"):
        memory.keep_freed_pages()  # as `gptbert train` does
    fp32_matmul_via_onednn(enabled=onednn and precision == "fp32").start()  # as `gptbert train` does
    torch.manual_seed(0)
    model = build(impl, official)
    if impl == "official":  # sequence-first tensors; attention_mask True = blocked, (B, T, T)
        from gptbert.optim import Lamb

        opt = Lamb([{"params": list(model.parameters()), "weight_decay": 0.1}], lr=1e-3)
        net = model
        blocked = torch.zeros(B, T, T, dtype=torch.bool)
        blocked[: max(1, B // 16)] = torch.ones(T, T, dtype=torch.bool).triu(1)  # causal rows
    elif impl == "ours":
        from gptbert.model import attention_mask
        from gptbert.optim import Lamb, param_groups

        model.recompute_attention(name.endswith("_recompute"))
        opt = Lamb(param_groups(model, 0.1), lr=1e-3)
        net = torch.compile(model) if compile_ else model
        segments = torch.zeros(B, T, dtype=torch.long)
        causal = torch.zeros(B, dtype=torch.bool)
        causal[: max(1, B // 16)] = True
        mask = attention_mask(segments, causal)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        net = model
    x = torch.randint(16, 8192, (B, T))
    positions = torch.randperm(B * T)[: int(0.3 * B * T)].sort().values
    targets = torch.randint(16, 8192, (positions.numel(),))
    labels = torch.full((B * T,), -100)
    labels[positions] = targets
    labels = labels.view(B, T)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if impl == "official":
                loss = net(x.t(), blocked, labels.t())[0]
            elif impl == "ours":
                logits = net(x, mask, positions)
                loss = torch.nn.functional.cross_entropy(logits.float(), targets)
            else:
                loss = net(input_ids=x, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    n_params = sum(p.numel() for p in model.parameters())
    if impl in ("ours", "official"):  # the same architecture and size
        from gptbert.config import model_preset
        from gptbert.model import GPTBERT

        flops_per_token = GPTBERT(model_preset("small")).flops_per_token(T)
    else:
        flops_per_token = 6 * n_params + 12 * 12 * T * 384
    return step, dict(tokens=B * T, flops_per_token=flops_per_token, params=n_params, precision=precision)


def run_one(name: str, repeats: int, official: str | None = None) -> dict:
    if name == "data_pipeline_worker":
        return data_pipeline(50 * repeats)
    step, info = prepare(name, official)
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    dt = sorted(times)[len(times) // 2]  # median
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(name=name, tok_s=info["tokens"] / dt, step_s=dt, flops_per_token=info["flops_per_token"],
                params=info["params"], peak_rss_mb=peak_rss_mb, precision=info["precision"])


def paired(a: str, b: str, steps: int, official: str | None = None) -> dict:
    """Configurations a and b in one process, steps alternating a, b, a, b, ...: each pair of steps is
    seconds apart, so the ratio of a pair is not moved by the VM's drift between separate runs (which
    made `--rounds` ratios span 0.9-1.2x for the same code). One allocator setting for both (ours:
    freed pages kept), so the ratio compares the models alone; peak RSS is not per configuration."""
    import statistics

    prepared = {n: prepare(n, official) for n in (a, b)}
    for n in (a, b):
        for _ in range(2):
            prepared[n][0]()
    times = {a: [], b: []}
    for _ in range(steps):
        for n in (a, b):
            t0 = time.perf_counter()
            prepared[n][0]()
            times[n].append(time.perf_counter() - t0)
    ratios = [tb / ta for ta, tb in zip(times[a], times[b])]  # > 1: a is faster (tokens/s ratio, same tokens)
    tok = {n: prepared[n][1]["tokens"] / statistics.median(times[n]) for n in (a, b)}
    return dict(a=a, b=b, steps=steps, tok_s={n: round(t, 1) for n, t in tok.items()},
                ratio_median=round(statistics.median(ratios), 3), ratio_min=round(min(ratios), 3),
                ratio_max=round(max(ratios), 3),
                step_s={n: [round(t, 3) for t in times[n]] for n in (a, b)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats, no compiled run (< 3 minutes)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--rounds", type=int, default=1,
                   help="run every configuration this many times, interleaved (config A, B, C, A, B, C, ...), "
                        "and report the median per configuration and each ratio's range over the rounds: "
                        "this VM's speed drifts by up to a third within an hour, so one pass can mislead")
    p.add_argument("--official", help="a checkout of ltgoslo/gpt-bert: adds the official_* configurations")
    p.add_argument("--paired", metavar="A,B",
                   help="two configurations in one process, steps alternating (A, B, A, B, ...); prints each "
                        "one's tokens/s and the per-pair ratio A/B (median and range). The steady ratio to "
                        "quote on a VM whose speed drifts between runs; see paired()")
    p.add_argument("--steps", type=int, default=10, help="--paired: steps of each configuration")
    p.add_argument("--configs", help="comma-separated configuration names (default: all that apply)")
    args = p.parse_args()
    repeats = args.repeats or (3 if args.quick else 6)
    if args.one:
        print(json.dumps(run_one(args.one, repeats, args.official)))
        return
    if args.paired:
        a, b = args.paired.split(",")
        for n in (a, b):
            if n not in CONFIGS:
                raise SystemExit(f"--paired: unknown configuration {n}; known: {', '.join(CONFIGS)}")
        r = paired(a, b, args.steps, args.official)
        print(f"# {time.strftime('%Y-%m-%d')}, {cpu_name()}, {os.cpu_count()} CPU threads; paired in one process")
        for n in (a, b):
            print(f"{n:28s} {r['tok_s'][n]:10.0f} tokens/s (median step)")
        print(f"ratio {a} / {b}: {r['ratio_median']:.2f}x (pairs {r['ratio_min']:.2f}-{r['ratio_max']:.2f}x, "
              f"{args.steps} pairs)")
        print(json.dumps({"paired": r, "cpu": cpu_name()}))
        return

    import torch

    from gptbert.precision import bf16_is_native

    if args.configs:
        names = args.configs.split(",")
        unknown = [n for n in names if n not in CONFIGS and n != "data_pipeline_worker"]
        if unknown:
            raise SystemExit(f"unknown configurations {unknown}; known: {', '.join(CONFIGS)}")
    else:
        names = [n for n in CONFIGS if not (args.quick and CONFIGS[n][4])
                 and (bf16_is_native("cpu") or CONFIGS[n][1] != "bf16")
                 and (args.official or CONFIGS[n][0] != "official")] + ["data_pipeline_worker"]
        if not bf16_is_native("cpu"):
            print("note: no native bf16 matmuls on this CPU: bf16 configurations skipped", file=sys.stderr)
    if args.official and not os.path.isfile(os.path.join(args.official, "pretraining", "model_extra.py")):
        raise SystemExit(f"--official {args.official}: no pretraining/model_extra.py there")
    precisions = ("bf16", "fp32") if bf16_is_native("cpu") else ("fp32",)  # a scalar bf16 loop takes minutes
    peaks = {d: matmul_peak(d, 1.0 if args.quick else 3.0) for d in precisions}
    peaks.setdefault("bf16", float("nan"))
    extra = ["--official", args.official] if args.official else []
    per_round: dict[str, dict[int, dict]] = {}  # name -> {round: result}; a failed run leaves its round out
    for k in range(max(1, args.rounds)):
        for name in names:
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--repeats", str(repeats), *extra],
                                  capture_output=True, text=True, env={**os.environ})
            if proc.returncode != 0:
                err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode
                print(f"{name}: failed ({err})")
                continue
            per_round.setdefault(name, {})[k] = json.loads(proc.stdout.strip().splitlines()[-1])
    # the median round of each configuration (by tokens/s); peak RSS is the largest of its rounds
    results = {}
    for name, by_round in per_round.items():
        rs = list(by_round.values())
        r = dict(sorted(rs, key=lambda x: x["tok_s"])[len(rs) // 2])
        if "peak_rss_mb" in r:  # the data pipeline's worker reports none
            r["peak_rss_mb"] = max(x["peak_rss_mb"] for x in rs)
        r["rounds_tok_s"] = [round(x["tok_s"], 1) for x in rs]
        results[name] = r

    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_name()}, torch {torch.__version__}, {os.cpu_count()} CPU threads; "
          f"matmul peak bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s, fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s")
    print(f"{'config':28s} {'tokens/s':>10s} {'MFU':>6s} {'peak RSS MB':>12s}  rounds")
    for name, r in results.items():
        if name == "data_pipeline_worker":
            continue
        r["mfu"] = r["tok_s"] * r["flops_per_token"] / peaks[r["precision"]]
        rounds = " ".join(f"{t:.0f}" for t in r["rounds_tok_s"]) if len(r["rounds_tok_s"]) > 1 else ""
        print(f"{name:28s} {r['tok_s']:10.0f} {100 * r['mfu']:5.1f}% {r['peak_rss_mb']:12.0f}  {rounds}")
    for ours, ref in (("small_t128_fp32", "hf_bert_t128_fp32"), ("small_t128_bf16", "hf_bert_t128_bf16"),
                      ("small_t128_fp32", "hf_bert_t128_fp32_keep_pages"),
                      ("small_t128_bf16", "hf_bert_t128_bf16_keep_pages"),
                      ("small_t128_bf16", "small_t128_bf16_default_malloc"),
                      ("small_t128_fp32", "official_t128_fp32"), ("small_t128_bf16", "official_t128_bf16"),
                      ("small_t512_fp32", "hf_bert_t512_fp32"), ("small_t512_fp32", "official_t512_fp32"),
                      ("small_t512_fp32", "small_t128_fp32"), ("small_t512_bf16", "small_t128_bf16")):
        if ours in results and ref in results:
            # per round: the two runs of one round are minutes apart, so their ratio drifts less than the medians'
            both = sorted(per_round[ours].keys() & per_round[ref].keys())
            each = [per_round[ours][k]["tok_s"] / per_round[ref][k]["tok_s"] for k in both]
            spread = f" (rounds {min(each):.2f}-{max(each):.2f}x)" if len(each) > 1 else ""
            print(f"ratio {ours} / {ref}: {results[ours]['tok_s'] / results[ref]['tok_s']:.2f}x{spread}")
    if "data_pipeline_worker" in results and "small_t128_bf16" in results:
        r = results["data_pipeline_worker"]
        print(f"data pipeline, 1 worker process: {r['tok_s']:,.0f} tokens/s = "
              f"{r['tok_s'] / results['small_t128_bf16']['tok_s']:.0f}x what small_t128_bf16 consumes")
    get = lambda n, k="tok_s": round(results[n][k], 3) if n in results else None  # noqa: E731
    summary = {
        "small_t128_bf16_tok_s": get("small_t128_bf16"),
        "small_t128_fp32_tok_s": get("small_t128_fp32"),
        "small_t128_fp32_mkl_tok_s": get("small_t128_fp32_mkl"),
        "hf_bert_t128_fp32_tok_s": get("hf_bert_t128_fp32"),
        "small_t128_bf16_compiled_tok_s": get("small_t128_bf16_compiled"),
        "hf_bert_t128_bf16_tok_s": get("hf_bert_t128_bf16"),
        "hf_bert_t128_bf16_keep_pages_tok_s": get("hf_bert_t128_bf16_keep_pages"),
        "hf_bert_t128_fp32_keep_pages_tok_s": get("hf_bert_t128_fp32_keep_pages"),
        "small_t128_bf16_default_malloc_tok_s": get("small_t128_bf16_default_malloc"),
        "hf_gpt2_t128_bf16_tok_s": get("hf_gpt2_t128_bf16"),
        "small_t512_bf16_tok_s": get("small_t512_bf16"),
        "small_t512_peak_rss_mb": get("small_t512_bf16", "peak_rss_mb"),
        "small_t512_recompute_bf16_tok_s": get("small_t512_bf16_recompute"),
        "small_t512_recompute_peak_rss_mb": get("small_t512_bf16_recompute", "peak_rss_mb"),
        "mfu_bf16": get("small_t128_bf16", "mfu"),
        "mfu_fp32": get("small_t128_fp32", "mfu"),
        "data_pipeline_worker_tok_s": get("data_pipeline_worker"),
        "matmul_peak_bf16_gflops": round(peaks["bf16"] / 1e9, 1) if peaks["bf16"] == peaks["bf16"] else None,
        "matmul_peak_fp32_gflops": round(peaks["fp32"] / 1e9, 1),
        "small_t512_fp32_tok_s": get("small_t512_fp32"),
        "small_t512_fp32_peak_rss_mb": get("small_t512_fp32", "peak_rss_mb"),
        "hf_bert_t512_fp32_tok_s": get("hf_bert_t512_fp32"),
        "official_t128_fp32_tok_s": get("official_t128_fp32"),
        "official_t128_bf16_tok_s": get("official_t128_bf16"),
        "official_t512_fp32_tok_s": get("official_t512_fp32"),
        "official_t512_fp32_peak_rss_mb": get("official_t512_fp32", "peak_rss_mb"),
        "cpu": cpu_name(),
        "rounds": {n: r["rounds_tok_s"] for n, r in results.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
