"""One answer for every failure a user can meet: a line that names the thing and what to do.

The CLI and the studio both turn an exception into ``(exit status, one line)`` with ``explain``:
2 for bad input (a request, a spec, a config, a file the user named), 1 for the environment
(a full disk, a read-only folder, a broken store, a server that does not answer). A traceback
is for ``--debug`` (or ``GENEVOLVE_DEBUG=1``) only.
"""

from __future__ import annotations

import errno

BAD_INPUT = 2
ENVIRONMENT = 1

# Errors that mean "the disk is full": no space, a quota, a file-size limit.
_FULL_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class UserError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it (exit 2)."""

    exit_code = BAD_INPUT


class EnvironmentFault(RuntimeError):
    """The machine, not the input: a full disk, a broken store, a folder we may not write (exit 1)."""

    exit_code = ENVIRONMENT


def is_disk_fault(exc: BaseException) -> bool:
    """A full disk or a folder that cannot be written: no retry helps, and no case is to blame."""
    return isinstance(exc, OSError) and exc.errno in _FULL_DISK | {errno.EROFS, errno.EACCES}


def explain(exc: BaseException) -> tuple[int, str]:
    """``(exit status, one line without the "error: " prefix)`` for any exception."""
    code = getattr(exc, "exit_code", None)
    if isinstance(exc, (UserError, EnvironmentFault)) and isinstance(code, int):
        return code, one_line(str(exc))
    if isinstance(exc, OSError):
        return ENVIRONMENT, one_line(os_error_line(exc))
    if isinstance(exc, RecursionError):
        return BAD_INPUT, "an input is nested too deeply (e.g. JSON with thousands of levels); flatten it and retry"
    if isinstance(exc, MemoryError):
        return ENVIRONMENT, "out of memory; use a smaller input or free memory and retry"
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    import sqlite3

    if isinstance(exc, sqlite3.DatabaseError):
        return ENVIRONMENT, one_line(f"the store could not be read ({exc}); see 'genevolve --help' for GENEVOLVE_HOME, "
                                     f"or move the damaged file aside and rerun")
    return ENVIRONMENT, one_line(f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)")


def os_error_line(exc: OSError) -> str:
    """What an OSError means for the user, naming the file."""
    where = exc.filename or ""
    what = f" {where}" if where else ""
    if exc.errno in _FULL_DISK:
        return f"no space left to write{what}: free some space (or choose another --out / GENEVOLVE_HOME) and rerun"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission to write{what}: choose a folder you can write (--out, GENEVOLVE_HOME) and rerun"
    if exc.errno == errno.ENOTDIR:
        return f"{where or 'a path'} lies below a file, not a folder: choose another path"
    if exc.errno == errno.EISDIR:
        return f"{where or 'a path'} is a folder where a file is needed: choose a file path"
    if exc.errno == errno.ENOENT:
        return f"{where or 'a file'} does not exist: check the path"
    return f"{exc.strerror or type(exc).__name__}{': ' + where if where else ''} ({type(exc).__name__})"


def one_line(text: str) -> str:
    """Collapse a message to one line (a nested error may carry newlines)."""
    return " ".join(str(text).split()) or "failed"
