"""Peak memory of `gptbert prepare` and of training, against corpus size.

Writes a synthetic BabyLM-format corpus of the requested sizes (sentences built
from a fixed word list, many files), runs `gptbert prepare` on each in its own
process and then a few training steps of a tiny model on the result, and
prints the peak RSS of each process. Prepare streams documents in batches and
training reads the token stream through a memmap, so neither should grow with
the corpus:

  python bench/prepare_memory.py --sizes 10,1000      # MB of text; prints a table and one JSON line
  python bench/prepare_memory.py --sizes 10,1000 --reuse   # training only, on folders prepared before

Training runs once per variant (stream packing; official packing; official packing with
count-balanced masking, whose counts are one uint16 per corpus token by design) and saves
two checkpoints, so the save path is in the peak too. Memory is reported as anonymous
(owned by the process) and file-backed (memory-mapped token files, reclaimable).

Run it alone on the machine (it prints the CPU name); 1 GB takes several minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpuinfo import cpu_name  # noqa: E402

WORDS = ("the a my our dog cat bird teacher child mother river garden ball kite house bread letter frog "
         "saw liked found painted chased wanted carried forgot gave took made said ran jumped sang "
         "big small old red green happy quiet slow yesterday again today near under after before").split()




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


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (data-loader workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{t}/children").read().split()]
        except OSError:
            pass
    return out


def _kb(pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile + RssShmem) of one process in kB; zeros once it is gone."""
    anon = file = 0
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1])
            elif line.startswith(("RssFile:", "RssShmem:")):
                file += int(line.split()[1])
    except OSError:
        pass
    return anon, file


def run_measured(args: list[str]) -> dict:
    """Seconds and peak memory (MB) of one child process and its children, sampled every 20 ms:
    `peak_rss` (anonymous + file pages, what `time -v` reports), `peak_anon` (memory the process
    owns: heap, arrays, tensors) and `peak_file` (pages of memory-mapped files, e.g. train.bin:
    shared with the page cache and dropped by the kernel under pressure)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"peak_rss_mb": 0.0, "peak_anon_mb": 0.0, "peak_file_mb": 0.0}
    while proc.poll() is None:
        a = f = 0
        for q in _tree(proc.pid):
            qa, qf = _kb(q)
            a, f = a + qa, f + qf
        peak["peak_rss_mb"] = max(peak["peak_rss_mb"], (a + f) / 1024)
        peak["peak_anon_mb"] = max(peak["peak_anon_mb"], a / 1024)
        peak["peak_file_mb"] = max(peak["peak_file_mb"], f / 1024)
        time.sleep(0.02)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(err[-2000:])
    return {"s": round(time.perf_counter() - t0, 1), **{k: round(v) for k, v in peak.items()}}


# Training variants: the row packing and count-balanced masking (one uint16 per corpus token).
VARIANTS = {
    "stream": ["--train.packing", "stream", "--objective.balanced_masking", "false"],
    "official": ["--train.packing", "official", "--objective.balanced_masking", "false"],
    "official+balanced": ["--train.packing", "official", "--objective.balanced_masking", "true"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,1000", help="corpus sizes in MB, increasing (default: 10,1000)")
    p.add_argument("--work", default="runs/bench/prepare_memory", help="scratch folder")
    p.add_argument("--steps", type=int, default=20, help="training steps per corpus and variant")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"training variants ({', '.join(VARIANTS)})")
    p.add_argument("--reuse", action="store_true", help="reuse prepared data folders in --work (skip prepare)")
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
        row = {"corpus_mb": mb}
        if not (args.reuse and (data / "meta.json").is_file()):
            prep = run_measured([*cli, "prepare", "--data", str(corpus), "--tokenizer", str(tok), "--out", str(data)])
            row["prepare"] = prep
            print(f"{mb:>6} MB prepare {prep['s']:>7.1f}s  peak RSS {prep['peak_rss_mb']:>5} MB "
                  f"(anon {prep['peak_anon_mb']}, file {prep['peak_file_mb']})")
        meta = json.loads((data / "meta.json").read_text())
        row["tokens"] = meta["train_tokens"] + meta["val_tokens"]
        for v in args.variants.split(","):
            run = work / f"run_{mb}MB"
            tr = run_measured([*cli, "train", "--config", "tiny-cpu", "--overwrite", *VARIANTS[v],
                               "--train.data", str(data), "--train.out_dir", str(run),
                               "--model.vocab_size", str(meta["vocab_size"]), "--train.max_steps", str(args.steps),
                               "--train.save_every", str(max(1, args.steps // 2)),
                               "--train.progress", "false", "--train.tensorboard", "false"])
            row[f"train_{v}"] = tr
            print(f"{mb:>6} MB {row['tokens']:>13,} tokens  train {v:<18} {args.steps} steps {tr['s']:>6.1f}s  "
                  f"peak RSS {tr['peak_rss_mb']:>5} MB  anon {tr['peak_anon_mb']:>5} MB  file {tr['peak_file_mb']:>5} MB")
        rows.append(row)
    print(json.dumps({"cpu": cpu_name(), "steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
