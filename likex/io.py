"""Files in and out: atomic writes (a crash or a bad input never leaves a half-written file
behind), and input files checked and read as the README says (a regular file, UTF-8, a byte
order mark removed)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from likex.errors import LikexError, clip_path

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def input_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a regular file (or a link to one); otherwise one line that says what
    it is instead: missing, a directory, a FIFO (which would block a read forever), ..."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise LikexError(f"{what} not found: {clip_path(p)}") from None
    except OSError as e:  # a link loop, a name too long, ...
        raise LikexError(f"{what} {clip_path(p)} cannot be read: {e.strerror}") from e
    if stat.S_ISREG(mode):
        return p
    if stat.S_ISDIR(mode):
        raise LikexError(f"{what} {clip_path(p)} is a directory, not a file")
    kind = next((name for test, name in _KINDS if test(mode)), "something else")
    raise LikexError(f"{what} {clip_path(p)} is not a regular file ({kind})")


def check_new_dir(path: str | Path) -> None:
    """``path`` can become a new output folder: it does not exist, or is an empty folder."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise LikexError(f"output folder {clip_path(p)} is a broken symbolic link")
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise LikexError(f"output folder {clip_path(p)} already exists and is not empty")


def new_folder_arg(text: str) -> str:
    """An ``--out`` as the command line is read: a folder a new run can be written into.
    Under torchrun rank 0 alone checks it (it makes the folder the other ranks name, maybe
    before a slower rank has read its command line)."""
    if os.environ.get("RANK", "0") == "0":
        check_new_dir(text)
    return text


def folder_arg(text: str, what: str) -> str:
    """A folder that must exist (``--resume DIR``)."""
    p = Path(text)
    if not p.exists():
        raise LikexError(f"{what} not found: {clip_path(p)}")
    if not p.is_dir():
        raise LikexError(f"{what} {clip_path(p)} is a file, not a folder")
    return text


def read_text_file(path: str | Path, what: str) -> str:
    """The text of a UTF-8 file, a leading byte order mark removed (an editor's, which would
    otherwise become part of the first line); a file that is not text is one line."""
    p = input_file(path, what)
    raw = p.read_bytes()
    if b"\x00" in raw:
        raise LikexError(f"{what} {clip_path(p)} is not text: it looks binary (NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LikexError(f"{what} is not UTF-8 text: {clip_path(p)} ({e.reason})") from e


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, then rename the temp file over ``path``.

    The temp file lives in the destination folder so the rename stays on one filesystem
    and is atomic; on any failure the temp file is removed and ``path`` is untouched. A
    system error names ``path`` (not the temp file's name).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes 0600, and so does safetensors, which writes a file of its own and
        # renames it over tmp: the file gets the usual mode once written
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename == tmp:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def temp_dir(parent: str | Path, prefix: str) -> Path:
    """A new folder in ``parent`` with the usual mode (mkdtemp makes 0700), to be renamed
    into place once it is complete."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(tmp, 0o777 & ~umask())
    return tmp


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Append one JSON line; a metrics log grows line by line, so each line is flushed whole."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
