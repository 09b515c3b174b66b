"""Peak memory of `gptbert prepare` and of training, against corpus size.

Writes a synthetic BabyLM-format corpus of the requested sizes (sentences built
from a fixed word list, many files), runs `gptbert prepare` on each in its own
process and then a few training steps of a tiny model on the result, and
prints the peak RSS of each process. Prepare streams documents in batches and
training reads the token stream through a memmap, so neither should grow with
the corpus:

  python bench/prepare_memory.py --sizes 10,1000      # MB of text; prints a table and one JSON line

Run it alone on the machine (it prints the CPU name); 1 GB takes several minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("the a my our dog cat bird teacher child mother river garden ball kite house bread letter frog "
         "saw liked found painted chased wanted carried forgot gave took made said ran jumped sang "
         "big small old red green happy quiet slow yesterday again today near under after before").split()


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_corpus(folder: Path, megabytes: int, seed: int = 0) -> int:
    """Files of ~8 MB each, documents of 1-40 lines separated by blank lines; returns bytes written."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    target, written, i = megabytes * 1_000_000, 0, 0
    while written < target:
        lines = []
        size = 0
        while size < 8_000_000 and written + size < target:
            n = rng.randint(1, 40)
            for _ in range(n):
                s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + " ."
                lines.append(s)
                size += len(s) + 1
            lines.append("")
            size += 1
        (folder / f"part{i:04d}.txt").write_text("\n".join(lines), encoding="utf-8")
        written += size
        i += 1
    return written


def run_measured(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    res = subprocess.run(args, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        print("warning: peak RSS of this child is not above an earlier child's; run sizes in increasing order",
              file=sys.stderr)
    return dt, peak / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,1000", help="corpus sizes in MB, increasing (default: 10,1000)")
    p.add_argument("--work", default="runs/bench/prepare_memory", help="scratch folder")
    p.add_argument("--steps", type=int, default=20, help="training steps per corpus")
    args = p.parse_args()
    work = Path(args.work)
    print(f"CPU: {cpu_name()}")
    cli = [sys.executable, "-m", "gptbert.cli"]
    rows = []
    tok = work / "tokenizer.json"
    for mb in sorted(int(x) for x in args.sizes.split(",")):
        corpus = work / f"corpus_{mb}MB"
        if not corpus.is_dir():
            write_corpus(corpus, mb)
        if not tok.is_file():
            run_measured([*cli, "tokenizer", "--data", str(corpus), "--vocab-size", "512", "--out", str(tok)])
        data = work / f"data_{mb}MB"
        t_prep, rss_prep = run_measured([*cli, "prepare", "--data", str(corpus), "--tokenizer", str(tok),
                                         "--out", str(data)])
        meta = json.loads((data / "meta.json").read_text())
        run = work / f"run_{mb}MB"
        t_train, rss_train = run_measured([*cli, "train", "--config", "tiny-cpu", "--overwrite",
                                           "--train.data", str(data), "--train.out_dir", str(run),
                                           "--model.vocab_size", str(meta["vocab_size"]), "--train.max_steps", str(args.steps),
                                           "--train.progress", "false", "--train.tensorboard", "false"])
        rows.append({"corpus_mb": mb, "tokens": meta["train_tokens"] + meta["val_tokens"],
                     "prepare_s": round(t_prep, 1), "prepare_peak_rss_mb": round(rss_prep),
                     "train_peak_rss_mb": round(rss_train), "train_s": round(t_train, 1)})
        r = rows[-1]
        print(f"{mb:>6} MB  {r['tokens']:>13,} tokens  prepare {r['prepare_s']:>7.1f}s peak {r['prepare_peak_rss_mb']:>5} MB"
              f"  |  train {args.steps} steps peak {r['train_peak_rss_mb']:>5} MB")
    print(json.dumps({"cpu": cpu_name(), "rows": rows}))


if __name__ == "__main__":
    main()
