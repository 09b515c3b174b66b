"""`gptbert <command> ...`: one command table, one parser per verb.

Each module below defines `add_parsers(subparsers)`, which adds its verbs with
their arguments and sets `fn=` to the function that runs them. `main` parses,
runs, and turns a `GPTBertError` into one line `error: ...` with exit status 2.
Argument checks that need no data run before any model or corpus is loaded.
"""

from __future__ import annotations

import argparse
import sys

from .. import memory
from ..errors import GPTBertError, did_you_mean
from ..io import is_disk_full
from . import evaluate, exits, hf, pretrain, submission, sweep

# command -> the module that defines it (the order of `gptbert --help`)
COMMANDS = {
    "tokenizer": pretrain,
    "prepare": pretrain,
    "train": pretrain,
    "quickstart": pretrain,
    "sweep": sweep,
    "eval": evaluate,
    "eval-aoa": evaluate,
    "finetune": evaluate,
    "submission": submission,
    "export": hf,
    "import-hf": hf,
    "generate": hf,
}


class _Parser(argparse.ArgumentParser):
    """argparse with whole flags only (no abbreviations) and one-line errors with a suggestion."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        if message.startswith("unrecognized arguments: "):
            parsers = [self, *getattr(self, "commands", {}).values()]
            known = sorted({o for p in parsers for a in p._actions for o in a.option_strings})
            bad = message.split(": ", 1)[1].split()
            flags = [b.split("=")[0] for b in bad if b.startswith("-")]
            hint = did_you_mean(flags[0], known) if flags else ""
            message = f"unknown option {flags[0] if flags else bad[0]}{hint} (see `{self.prog} --help`)"
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(exits.USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gptbert", description="Pretrain, evaluate and export GPT-BERT models.")
    sub = p.add_subparsers(dest="command", required=True)
    for module in dict.fromkeys(COMMANDS.values()):  # each module once, in table order
        module.add_parsers(sub)
    p.commands = sub.choices
    missing = set(COMMANDS) ^ set(sub.choices)
    if missing:  # the table and the modules must agree
        raise RuntimeError(f"command table out of sync with the parsers: {sorted(missing)}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    memory.keep_freed_pages()  # every command's tensors reuse freed pages (memory.py; on glibc only)
    try:
        status = args.fn(args)
    except GPTBertError as e:
        print(f"error: {e}", file=sys.stderr)
        return exits.USER_ERROR
    except Exception as e:
        if not is_disk_full(e):
            raise
        # Outputs are written under temporary names and renamed at the end, so nothing was replaced.
        where = getattr(e, "filename", None) or "output"
        print(f"error: {where}: cannot write: the disk (or a file-size limit) is full "
              f"({' '.join(str(e).split())[:120]}); earlier outputs are unchanged", file=sys.stderr)
        return exits.NO_SPACE
    except KeyboardInterrupt:
        print("error: interrupted (no checkpoint written)", file=sys.stderr)
        return exits.ABORTED
    return status or 0
