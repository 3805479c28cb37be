"""Writing outputs safely: atomic files and folders, never over a user's files.

* `write_json_atomic` / `disk_full_guard`: a file is written under a temporary
  name in its folder, flushed, fsynced and renamed into place, so a reader (or
  a resumed run) sees the old or the new file, never half of one. A full disk
  (`ENOSPC`, or TensorFlow's "No space left on device") becomes a
  `DiskFullError` naming the path. TensorFlow's `CheckpointManager` is atomic
  in the same sense: the data shards are written to a temporary folder and
  renamed, the `.index` file is written last, and the `checkpoint` state
  file that names the latest checkpoint is replaced atomically only after
  that, so `latest_checkpoint` always names a complete checkpoint.
* `temp_dir_for` / `replace_dir`: build a folder in a temporary sibling and
  rename it into place, so a reader sees the old or the new folder, never half.
* `check_output_dir` / `write_marker`: every folder the project writes holds a
  small marker file, ``.sst_tf`` (JSON naming what wrote it). Before writing, a
  command refuses a target that is a file, or a non-empty folder without that
  marker, so nothing a user put there is deleted or replaced; an earlier
  output of ours is replaced only where the caller allows it (``--overwrite``).
* `check_output_file`: the same rule for a single output file, recognised as
  ours by its content.
* `read_json_object`: reads back a JSON object sst_tf wrote (a run's
  ``config.json`` or ``metrics.json``, an export's record), with one message
  shape for a damaged file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable

from sst_tf.cli import UsageError

MARKER = ".sst_tf"


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


# -- whose folder is it? ---------------------------------------------------------


def write_marker(folder: str, kind: str, writer: str) -> None:
    """Writes ``folder/.sst_tf``: ``{"kind": kind, "written_by": writer}``.

    Args:
      folder: an existing folder the project writes.
      kind: what the folder holds (``export``, ``model_dir``, ``projector``, ...).
      writer: the module or command that wrote it.
    """
    path = os.path.join(folder, MARKER)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"kind": kind, "written_by": writer, "format": 1}, f, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_marker(folder: str) -> dict | None:
    """The marker of ``folder`` as a dict, or None when there is none (or it is unreadable)."""
    try:
        with open(os.path.join(folder, MARKER)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and "kind" in marker else None


def folder_kind(folder: str, legacy: Callable[[str], str | None] | None = None) -> str | None:
    """What an existing folder of ours holds (its marker's kind), else None.

    Args:
      folder: an existing folder.
      legacy: recognises outputs written before markers existed; returns
        their kind or None.
    """
    marker = read_marker(folder)
    if marker is not None:
        return str(marker["kind"])
    return legacy(folder) if legacy else None


def check_creatable(path: str, name: str) -> None:
    """Refuses a path that cannot be created: below a file, or on a read-only folder.

    Args:
      path: a file or folder that does not exist yet.
      name: how messages name it, e.g. ``--model_dir=PATH``.

    Raises:
      UsageError: naming the flag and the part of the path at fault.
    """
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{name} cannot be created: {parent} is a file, not a folder; "
                         "choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{name} cannot be created: {parent} is not writable (read-only, "
                         "or no permission); choose another path")


def check_output_dir(
    path: str,
    name: str,
    kind: str,
    replace_ours: bool = True,
    legacy: Callable[[str], str | None] | None = None,
) -> bool:
    """Refuses an output folder the project may not write into or replace.

    Allowed: a path that does not exist, an empty folder, and a folder whose
    marker (or ``legacy`` check) says it is an earlier ``kind`` output of ours,
    the latter only when ``replace_ours``.

    Args:
      path: the folder a command is about to write.
      name: how messages name the folder, e.g. ``--export_dir=PATH``.
      kind: what the command writes there.
      replace_ours: whether an earlier output of ours may be replaced; False
        asks for ``--overwrite``.
      legacy: see `folder_kind`.

    Returns:
      True when ``path`` holds an earlier output of ours.

    Raises:
      UsageError: naming the flag and the folder, and what to do instead.
    """
    if not os.path.lexists(path):
        check_creatable(path, name)
        return False
    if not os.path.isdir(path):
        raise UsageError(
            f"{name} is a file, not a folder: sst_tf does not replace files it did "
            "not write; choose another folder"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{name} is not writable (read-only, or no permission): choose "
                         "another folder")
    if not os.listdir(path):
        return False
    found = folder_kind(path, legacy)
    if found is None:
        raise UsageError(
            f"{name} is a folder that holds files sst_tf did not write (no "
            f"{MARKER} marker); nothing was changed: choose a new or empty folder"
        )
    if found != kind:
        raise UsageError(
            f"{name} holds an sst_tf {found}, not a {kind}; nothing was changed: "
            "choose another folder"
        )
    if not replace_ours:
        raise UsageError(
            f"{name} already holds an sst_tf {kind}; pass --overwrite to replace it, "
            "or choose another folder"
        )
    return True


def check_output_file(path: str, name: str, is_ours: Callable[[str], bool]) -> bool:
    """Refuses to replace an existing file unless ``is_ours(path)`` recognises it.

    Args:
      path: the file a command is about to write.
      name: how messages name it, e.g. ``--output=PATH``.
      is_ours: recognises an earlier output of ours by its content.

    Returns:
      True when ``path`` exists (and is an earlier output of ours).

    Raises:
      UsageError: ``path`` is a folder, or a file sst_tf did not write.
    """
    if not os.path.lexists(path):
        return False
    if os.path.isdir(path):
        raise UsageError(f"{name} is a folder; give a file name")
    if not is_ours(path):
        raise UsageError(
            f"{name} exists and was not written by sst_tf; nothing was changed: "
            "choose another file name"
        )
    return True


# -- files ---------------------------------------------------------------------


class DiskFullError(OSError):
    """No space left on the device while writing a file (names the path)."""


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(getattr(error, "message", "") or error)
    return "No space left on device" in text or "ENOSPC" in text


@contextlib.contextmanager
def disk_full_guard(path: str):
    """Turns a disk-full error raised inside the block into `DiskFullError(path)`.

    Catches `OSError(ENOSPC)` and TensorFlow errors whose message says
    "No space left on device" (checkpoint and summary writes).
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a full disk
        if not _is_disk_full(e):
            raise
        raise DiskFullError(
            errno.ENOSPC,
            f"No space left on the device while writing {path}; free space (or point "
            "--model_dir elsewhere) and rerun the same command: it resumes from the last "
            "complete checkpoint",
            path,
        ) from e


def write_text_atomic(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file in the same folder and a rename.

    Raises:
      DiskFullError: the disk is full (the old file, if any, is left intact).
    """
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    with disk_full_guard(path):
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise


def write_json_atomic(path: str, obj) -> None:
    """Writes `obj` as indented, key-sorted JSON to `path` atomically (see above)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json_object(path: str, named_by: str) -> dict:
    """Reads a JSON object sst_tf wrote (a run's config.json or metrics.json, an export's record).

    Args:
      path: the file. Callers check first that it exists: what its absence
        means depends on the file.
      named_by: what the user gave that led to the file, e.g.
        ``--model_dir=runs/cub``; every message starts with it.

    Raises:
      ValueError: ``NAMED_BY: PATH is not valid JSON (DETAIL): truncated or edited
        by hand?``, or ``NAMED_BY: PATH does not hold a JSON object``.
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise ValueError(
            f"{named_by}: {path} is not valid JSON ({e}): truncated or edited by hand?") from e
    if not isinstance(data, dict):
        raise ValueError(f"{named_by}: {path} does not hold a JSON object")
    return data
