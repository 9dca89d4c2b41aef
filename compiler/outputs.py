"""Output folders written whole: a reader (or a second writer) sees the old folder, none, or the
new one, never a mix of two runs.

:func:`write_folder` fills a fresh temporary sibling of the target (``.NAME.XXXX.tmp``, made by
an exclusive ``mkdir`` as ``mkdtemp`` does, so nothing in it can be a planted symbolic link) and
renames it into place; an old folder is first renamed aside and removed after.  An interrupted
write (Ctrl-C, SIGTERM, an error) leaves the target as it was and removes the temporary
folder.  The target itself is never followed when it is a symbolic link, and an existing
folder is replaced only when ``replaceable`` says it holds an earlier output of the same kind
(so ``-o ~`` cannot wipe a home folder).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import time
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
    # The staging folder's name is known before it exists, so that a stop at any point
    # (SIGTERM is raised as an exception by the command line) leaves nothing behind.  mkdir
    # fails on any existing name, a planted symbolic link included, as mkdtemp's does.
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    ours = True
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(staging, 0o700)
        except OSError as error:
            ours = False
            blocking = next((folder for folder in target.parents
                             if folder.exists() and not folder.is_dir()), None)
            raise InputError(f"cannot write the {what} {target}: "
                             + (f"{blocking} is a file, not a folder" if blocking else
                                f"{error.strerror or error}")) from None
        os.chmod(staging, umask_mode(0o777))
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
                    if not target.exists():
                        # Ours did not go in (refused, or the process was stopped between
                        # the renames): the old folder goes back.
                        with contextlib.suppress(OSError):
                            os.rename(aside, target)
                    shutil.rmtree(aside, ignore_errors=True)
            _remove_abandoned(target)
            return target
        raise InputError(f"{target} kept changing while the {what} was written into it")
    finally:
        if ours:
            shutil.rmtree(staging, ignore_errors=True)


# A staging or set-aside folder older than this was left by a writer that was killed
# (SIGKILL, a power cut: no ``finally`` ran); a live writer's is minutes old at most.
ABANDONED_AFTER_SECONDS = 24 * 3600


def _remove_abandoned(target: Path) -> None:
    """Remove what killed writers of ``target`` left beside it (``.NAME.<hex>.tmp`` staging
    and ``.NAME.<hex>.old`` set-aside folders older than ``ABANDONED_AFTER_SECONDS``)."""
    now = time.time()
    for pattern in (f".{glob.escape(target.name)}.*.tmp", f".{glob.escape(target.name)}.*.old"):
        for left in target.parent.glob(pattern):
            with contextlib.suppress(OSError):
                if (left.is_dir() and not left.is_symlink()
                        and now - left.lstat().st_mtime > ABANDONED_AFTER_SECONDS):
                    shutil.rmtree(left, ignore_errors=True)


def write_file(target, data: bytes | str) -> Path:
    """Write one file whole: a temporary sibling renamed over it (a symbolic link at
    ``target`` is replaced, never written through)."""
    target = Path(target)
    if target.is_dir() and not target.is_symlink():
        raise InputError(f"{target} is a folder; give a file name")
    payload = data.encode() if isinstance(data, str) else data
    # As write_folder's staging folder: named before it exists, created exclusively.
    name = str(target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as error:
            name = None
            raise InputError(f"cannot write {target}: {error.strerror or error}") from None
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        os.chmod(name, umask_mode(0o666))
        os.replace(name, target)
    finally:
        if name is not None and os.path.lexists(name):
            os.unlink(name)
    return target
