"""Every BabyLM milestone of a run as its own Hugging Face folder, laid out like hub branches.

`gptbert export RUN OUT --all-checkpoints` writes

    OUT/chck_1M/   OUT/chck_2M/  ...  OUT/chck_100M/   one export per word-count milestone (words.py)
    OUT/main/                                          the final model (the run's newest checkpoint)

so that each folder can be pushed as the revision of the same name, the way the
BabyLM organisers read checkpoints (`revision="chck_10M"`). `push_revisions`
does that with huggingface_hub; it is thin on purpose (no hub is reachable
where this project is tested) and everything it calls is one documented API.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..checkpoint import resolve_checkpoint
from ..errors import GPTBertError
from .export_hf import export_hf

_MILESTONE = re.compile(r"^chck_(\d+)M$")


def milestone_folders(run: str | Path) -> list[Path]:
    """The complete milestone checkpoints of a run, in word order."""
    ckpt_root = resolve_checkpoint(run).parent
    found = [(int(m.group(1)), d) for d in ckpt_root.iterdir()
             if (m := _MILESTONE.match(d.name)) and (d / "meta.json").is_file()]
    return [d for _, d in sorted(found)]


def export_revisions(run: str | Path, out_dir: str | Path, **export_kw) -> list[Path]:
    """Export every milestone and the final model; returns the folders written."""
    out_dir = Path(out_dir)
    milestones = milestone_folders(run)
    if not milestones:
        raise GPTBertError(f"{run}: no milestone checkpoints (chck_1M, ...): train with --train.milestones true "
                           "(the default) for at least 1M words")
    written = [export_hf(m, out_dir / m.name, **export_kw) for m in milestones]
    written.append(export_hf(resolve_checkpoint(run), out_dir / "main", **export_kw))
    return written


def push_commands(out_dir: Path, repo_id: str = "USER/MODEL") -> list[str]:
    """Shell commands that push each folder as its own branch (huggingface-cli 0.2x / hf 1.x)."""
    cmds = []
    for d in sorted(p for p in Path(out_dir).iterdir() if p.is_dir()):
        rev = "" if d.name == "main" else f" --revision {d.name}"
        cmds.append(f"huggingface-cli upload {repo_id} {d} .{rev}")
    return cmds


def push_revisions(out_dir: str | Path, repo_id: str, api=None, private: bool = False) -> list[str]:
    """Create `repo_id` if needed, then one branch per milestone folder, and upload each folder to its branch."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id, exist_ok=True, private=private)
    pushed = []
    for d in sorted(p for p in Path(out_dir).iterdir() if p.is_dir()):
        revision = None if d.name == "main" else d.name
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(d), revision=revision,
                          commit_message=f"gptbert export ({d.name})")
        pushed.append(d.name)
    return pushed
