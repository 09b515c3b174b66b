"""`gptbert <command> ...`: one command table, one parser per verb.

Each module below defines `add_parsers(subparsers)`, which adds its verbs with
their arguments and sets `fn=` to the function that runs them. `main` parses,
runs, and turns a `GPTBertError` into one line `error: ...` with exit status 2.
Argument checks that need no data run before any model or corpus is loaded.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import GPTBertError
from . import evaluate, hf, pretrain

# command -> the module that defines it (the order of `gptbert --help`)
COMMANDS = {
    "tokenizer": pretrain,
    "prepare": pretrain,
    "train": pretrain,
    "quickstart": pretrain,
    "eval": evaluate,
    "finetune": evaluate,
    "export": hf,
    "import-hf": hf,
    "generate": hf,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptbert", description="Pretrain, evaluate and export GPT-BERT models.",
                                allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    for module in dict.fromkeys(COMMANDS.values()):  # each module once, in table order
        module.add_parsers(sub)
    missing = set(COMMANDS) ^ set(sub.choices)
    if missing:  # the table and the modules must agree
        raise RuntimeError(f"command table out of sync with the parsers: {sorted(missing)}")
    for s in sub.choices.values():
        s.allow_abbrev = False  # `--train.max_step` must not silently mean `--train.max_steps`
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except GPTBertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
