"""Folders written atomically: build in a temporary sibling, rename into place."""

from __future__ import annotations

import os
import shutil
import tempfile


def temp_dir_for(dst: str) -> str:
    """A new empty folder next to ``dst`` (same file system), with normal permissions."""
    dst = os.path.abspath(dst)
    parent, base = os.path.split(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def replace_dir(src: str, dst: str) -> None:
    """Moves the complete folder ``src`` to ``dst``, replacing any old ``dst``.

    The old folder is moved aside first and deleted only once ``src`` is in
    place; if the second rename fails, it is moved back.
    """
    src, dst = os.path.abspath(src), os.path.abspath(dst)
    if not os.path.exists(dst):
        os.rename(src, dst)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.old-", dir=os.path.dirname(dst))
    os.rmdir(old)
    os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)
