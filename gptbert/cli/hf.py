"""`gptbert export | import-hf | generate`: to and from Hugging Face, and text generation.

transformers is imported only when a command needs it (export), so training
and evaluation never need it installed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..convert.export_hf import export_hf
from ..convert.import_hf import import_hf
from ..convert.revisions import export_revisions, push_commands, push_revisions
from ..errors import GPTBertError
from ..generate import generate_text
from ..hf import DEFAULT_MLM_LAYOUT, MLM_LAYOUTS, PIPELINE_BACKEND
from ..pretrained import load
from ..tokenizer import BOS_ID, EOS_ID

MODEL_HELP = "run folder, quickstart --out folder, checkpoints/ folder, or a checkpoints/step_N folder"


def cmd_export(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    if args.all_checkpoints:
        kw = dict(raw=args.raw, tokenizer=args.tokenizer, mlm_logits_layout=args.mlm_layout, force=args.force,
                  results=args.results or ())
        if args.push_to:  # checked before hours of exports: the push needs huggingface_hub
            import huggingface_hub  # noqa: F401
        folders = export_revisions(args.checkpoint, args.out_dir, **kw)
        print(f"exported {len(folders)} folders (every milestone + main) in {time.perf_counter() - t0:.0f}s -> "
              f"{args.out_dir}")
        if args.push_to:
            pushed = push_revisions(args.out_dir, args.push_to)
            print(f"pushed {len(pushed)} revisions to {args.push_to}: {', '.join(pushed)}")
        else:
            print("push each folder as the revision of its name (or pass --push-to USER/MODEL):")
            for c in push_commands(Path(args.out_dir)):
                print(f"  {c}")
        return
    out = export_hf(args.checkpoint, args.out_dir, raw=args.raw, tokenizer=args.tokenizer,
                    mlm_logits_layout=args.mlm_layout, force=args.force, results=args.results or ())
    weights = "raw trained weights" if args.raw else "EMA weights where the checkpoint has them"
    print(f"exported ({weights}; masked-LM logit layout '{args.mlm_layout}') in {time.perf_counter() - t0:.1f}s -> {out}")
    print(f"load with: AutoModelForCausalLM.from_pretrained('{out}', trust_remote_code=True)")
    print(f"BabyLM 2025 pipeline: --backend causal, or --backend {PIPELINE_BACKEND[args.mlm_layout]} for masked "
          f"scoring (this export's layout; the other backend would read the wrong logit rows)")


def cmd_import_hf(args: argparse.Namespace) -> None:
    path = import_hf(args.dir, args.out_run_dir)
    print(f"imported {args.dir} -> {path}")


def cmd_generate(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise GPTBertError("--max-new-tokens must be >= 1")
    if args.temperature <= 0:
        raise GPTBertError("--temperature must be > 0")
    if args.repetition_penalty <= 0:
        raise GPTBertError("--repetition-penalty must be > 0")
    if not 0 < args.top_p <= 1:
        raise GPTBertError("--top-p must be in (0, 1]")
    if args.top_k < 0:
        raise GPTBertError("--top-k must be >= 0")
    pre = load(args.checkpoint, weights="raw" if args.raw else "ema", tokenizer=args.tokenizer)
    text = generate_text(
        pre.model, pre.tokenizer, args.prompt,
        max_new_tokens=args.max_new_tokens, greedy=not args.sample, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
        stop_ids=() if args.no_stop else (BOS_ID, EOS_ID), seed=args.seed,
    )
    sys.stdout.write(args.prompt + text + "\n")


def add_parsers(subparsers) -> None:
    s = subparsers.add_parser("export", help="write a Hugging Face folder (trust_remote_code) for a checkpoint")
    s.add_argument("checkpoint", help=MODEL_HELP)
    s.add_argument("out_dir", help="output folder (must be new or empty unless --force)")
    s.add_argument("--raw", action="store_true", help="export the trained weights instead of the EMA weights")
    s.add_argument("--tokenizer", help="tokenizer.json (default: the one named in the checkpoint's config)")
    s.add_argument("--mlm-layout", choices=MLM_LAYOUTS, default=DEFAULT_MLM_LAYOUT,
                   help="AutoModelForMaskedLM logits: mntp (default; GPT-BERT's own layout, as in the released "
                        "checkpoints: row i scores token i+1; BabyLM 2025 --backend mntp) or aligned (row i scores "
                        "token i; BabyLM 2025 --backend mlm, minicons MaskedLMScorer); recorded in config.json")
    s.add_argument("--results", action="append", metavar="RESULTS_JSON",
                   help="results.json of `gptbert eval` / `gptbert finetune` to list in the model card "
                        "(repeatable; results.json files in the run folder are found by themselves)")
    s.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    s.add_argument("--all-checkpoints", action="store_true",
                   help="export every BabyLM milestone (checkpoints/chck_1M ...) to OUT_DIR/chck_NM and the final model "
                        "to OUT_DIR/main, one folder per hub revision")
    s.add_argument("--push-to", metavar="USER/MODEL",
                   help="with --all-checkpoints: upload each folder as the hub revision of its name (huggingface_hub)")
    s.set_defaults(fn=cmd_export)

    s = subparsers.add_parser("import-hf", help="convert an official GPT-BERT HF folder into a checkpoint of ours")
    s.add_argument("dir", help="folder with config.json, pytorch_model.bin or model.safetensors, tokenizer.json")
    s.add_argument("out_run_dir", help="run folder to create (gets tokenizer.json and checkpoints/step_0000000)")
    s.set_defaults(fn=cmd_import_hf)

    s = subparsers.add_parser("generate", help="continue a prompt with a checkpoint (causal mode)")
    s.add_argument("checkpoint", help=MODEL_HELP)
    s.add_argument("prompt", help="text to continue")
    s.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate at most (default: 50)")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--greedy", dest="sample", action="store_false", help="pick the most likely token (default)")
    mode.add_argument("--sample", dest="sample", action="store_true", help="sample from the distribution")
    s.set_defaults(sample=False)
    s.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    s.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens only (0 = all)")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0 = off)")
    s.add_argument("--repetition-penalty", type=float, default=1.5,
                   help="CTRL-style penalty on tokens already present (default: 1.5, as the paper recommends; 1 = off)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    s.add_argument("--no-stop", action="store_true", help="do not stop at <s> / </s> (document boundaries)")
    s.add_argument("--raw", action="store_true", help="use the trained weights instead of the EMA weights")
    s.add_argument("--tokenizer", help="tokenizer.json (default: the one named in the checkpoint's config)")
    s.set_defaults(fn=cmd_generate)
