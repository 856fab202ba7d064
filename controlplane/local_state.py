"""The embedded default's local state (``var/``: the SQLite database, the broker's messages, the
registry's keys and images) is private to the user who runs the service.

Every directory the settings create there is made 0700, and a SQLite database 0600. The
directory is what protects the files (nobody else can reach a file in a 0700 directory); the
file's own mode is defence in depth, for a database copied or moved elsewhere. A umask is not
enough for the database: SQLite creates the file when Django first connects (``migrate``, the
first request), with the mode the process's umask gives (0644 under the usual 022), and its
``-wal`` and ``-shm`` files take the database file's mode. So ``private_sqlite_files``, a
``connection_created`` receiver (``ControlplaneConfig.ready``), sets 0600 on the database and
those files on every new SQLite connection: one ``stat`` each, a ``chmod`` only when the mode
differs, and nothing for a file the process does not own.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600
#: The files SQLite keeps beside a database: the write-ahead log, its index, the rollback journal.
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def private_directory(path: Path) -> Path:
    """Create ``path`` and each missing parent, each with mode 0700 (set after ``mkdir``, which
    the umask narrows but never the other way). Existing directories are left as they are."""
    for directory in reversed([p for p in (path, *path.parents) if not p.exists()]):
        directory.mkdir(exist_ok=True)  # another process may create it meanwhile
        directory.chmod(PRIVATE_DIRECTORY)
    return path


def private_file(path: Path) -> None:
    """Give ``path`` mode 0600 if it exists, is ours and has another mode."""
    try:
        if stat.S_IMODE(path.stat().st_mode) != PRIVATE_FILE:
            path.chmod(PRIVATE_FILE)
    except OSError:  # gone, or not ours to change
        return


def private_sqlite_files(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: a SQLite database and its companions are 0600."""
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict["NAME"])
    if connection.is_in_memory_db():
        return
    for suffix in SQLITE_COMPANIONS:
        private_file(Path(name + suffix))


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path``, replacing it atomically. The temporary file is created 0600
    with a unique name (a crash can leave one behind; it never blocks a later write)."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
