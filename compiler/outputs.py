"""Output folders written whole: a reader (or a second writer) sees the old folder, none, or the
new one, never a mix of two runs.

:func:`write_folder` fills a fresh temporary sibling of the target (``.NAME.XXXX.tmp``, made by
``mkdtemp``, so nothing in it can be a planted symbolic link) and renames it into place; an old
folder is first renamed aside and removed after.  An interrupted write (Ctrl-C, an error) leaves
the target as it was and removes the temporary folder.  The target itself is never followed
when it is a symbolic link, and an existing folder is replaced only when ``replaceable`` says
it holds an earlier output of the same kind (so ``-o ~`` cannot wipe a home folder).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from .errors import InputError

__all__ = ["write_folder", "write_file", "umask_mode"]


def umask_mode(mode: int) -> int:
    """``mode`` less the process's umask: what ``open`` or ``mkdir`` would have given.
    ``mkstemp`` and ``mkdtemp`` make their files private (0600, 0700) whatever the umask, so
    an output renamed into place from one gets this mode first, as if written directly."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def _check_target(target: Path, replaceable: Callable[[Path], bool], what: str) -> None:
    if target.is_symlink():
        raise InputError(f"{target} is a symbolic link: refusing to write the {what} through "
                         f"it (give the folder it points to, or another name)")
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a folder: the {what} is a folder; give "
                         f"another name")
    if target.is_dir() and any(target.iterdir()) and not replaceable(target):
        raise InputError(f"{target} is a folder that does not hold a {what}: refusing to "
                         f"replace it; give a new or empty folder")


def write_folder(target, fill: Callable[[Path], None], *, what: str = "output",
                 replaceable: Callable[[Path], bool] = lambda folder: False) -> Path:
    """Make ``target`` the folder that ``fill(folder)`` writes, all at once; returns it."""
    target = Path(target)
    _check_target(target, replaceable, what)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent))
        os.chmod(staging, umask_mode(0o777))
    except OSError as error:
        raise InputError(f"cannot write the {what} {target}: {error.strerror or error}") from None
    try:
        fill(staging)
        # Another writer may put its folder in place between our renames: then ours goes in
        # over it the same way, whole, on the next round.
        for _ in range(8):
            aside = None
            if target.is_dir() and not target.is_symlink():
                aside = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
                try:
                    os.rename(target, aside)
                except FileNotFoundError:
                    aside = None
                except OSError as error:
                    # A folder without write permission cannot be moved (its ".." entry).
                    raise InputError(f"cannot replace {target} with the {what}: "
                                     f"{error.strerror or error}") from None
            try:
                os.rename(staging, target)
            except OSError as error:
                if target.is_symlink() or (target.exists() and not target.is_dir()):
                    raise
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise InputError(f"cannot write the {what} {target}: "
                                     f"{error.strerror or error}") from None
                continue
            finally:
                if aside is not None:
                    shutil.rmtree(aside, ignore_errors=True)
            return target
        raise InputError(f"{target} kept changing while the {what} was written into it")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_file(target, data: bytes | str) -> Path:
    """Write one file whole: a temporary sibling renamed over it (a symbolic link at
    ``target`` is replaced, never written through)."""
    target = Path(target)
    if target.is_dir() and not target.is_symlink():
        raise InputError(f"{target} is a folder; give a file name")
    payload = data.encode() if isinstance(data, str) else data
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent)
    except OSError as error:
        raise InputError(f"cannot write {target}: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        os.chmod(name, umask_mode(0o666))
        os.replace(name, target)
    finally:
        if os.path.exists(name):
            os.unlink(name)
    return target
