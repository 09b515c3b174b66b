"""Files that are never half-written, checksums, and the one JSONL reader.

Every output of gptbert (prepared corpora, checkpoints, tokenizers, exports,
evaluation results) is written under a temporary name, flushed to disk and
renamed into place. A rename within one folder is atomic, so a crash, a kill
or a full disk leaves either the old file or the new one, never a mix. The
temporary name is always `.<name>.tmp-<pid>` next to the target, so a reader
never picks one up and a later run can tell whose leftover it is.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import GPTBertError


def temp_path(path: Path) -> Path:
    """The temporary name used while `path` is being written."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_synced(path: Path, data: str | bytes | bytearray | memoryview) -> None:
    """Write and fsync one file (no rename: for files inside a folder that is renamed as a whole)."""
    mode, kw = ("w", {"encoding": "utf-8"}) if isinstance(data, str) else ("wb", {})
    with open(path, mode, **kw) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_save(path: str | Path, save: Callable[[Path], None]) -> Path:
    """Run `save(tmp)` to write a file, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        save(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_save(path, lambda tmp: write_synced(tmp, text))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def replace_dir(new: Path, final: Path) -> None:
    """Swap the finished folder `new` in as `final` (same parent). The old `final`, if any, is put
    back when the second rename fails, and deleted once the new one is in place."""
    fsync_dir(new)
    if not final.exists():
        os.replace(new, final)
    else:
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        try:
            os.replace(new, final)
        except BaseException:
            os.replace(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    fsync_dir(final.parent)


_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def is_disk_full(e: BaseException) -> bool:
    """A write failed because the disk, a quota or a file-size limit is full: an OSError with that errno,
    or a library (safetensors, tokenizers) error that carries it in its message."""
    if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
        return True
    text = str(e)
    return any(f"os error {n})" in text for n in _FULL_ERRNOS) or "No space left on device" in text


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def iter_jsonl(lines: Iterable[str], where: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object is
    reported as `<where>:<line>: ...`."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise GPTBertError(f"{where}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise GPTBertError(f"{where}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        yield lineno, rec


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """`iter_jsonl` over a file, with a clear error when it is missing or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise GPTBertError(f"{path}: file does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            yield from iter_jsonl(f, path)
    except UnicodeDecodeError as e:
        raise GPTBertError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
