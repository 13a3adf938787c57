"""Files that are never half-written: write a temp file beside the target, rename it when complete.

`os.replace` within one folder is atomic on POSIX and Windows, so a reader sees either the old
file or the complete new one; an exception (or Ctrl-C) inside the block removes the temp file
and leaves the old file untouched. Used by `MLP.save`, the CLI's outputs and dataset downloads.
"""

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file in path's folder for writing; on leaving the block, rename it to path.

    Yields the open file; its `name` is the temp file's path (e.g. to re-read it before the
    rename). If the block raises, the temp file is deleted and path is not touched.
    """
    path = Path(path)
    if "w" not in mode:
        raise ValueError(f"mode must be a write mode such as 'wb' or 'w', got {mode!r}")
    if not path.name or path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    # A random name opened exclusively rather than tempfile.mkstemp, whose 0600 permissions would
    # carry over to the final file; this one gets the usual umask-derived permissions.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        f = open(tmp, mode.replace("w", "x"), encoding=encoding)
    except OSError as exc:  # name the file the caller asked for, not the temp file
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
