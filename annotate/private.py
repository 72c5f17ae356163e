"""Files of the instance folder that hold secrets or participant data, readable by the owner only.

Every such file is written atomically (a private temporary file in the same folder, then
``os.replace``), so a reader never sees half a secret and the file is never, even for an instant,
readable by others — ``write_text`` followed by ``chmod`` would leave a window with the umask's
mode. The admin *epoch* lives here too: a random token that every admin session carries and that
logout, ``set-password`` and each demo start replace, which revokes every session issued before
without touching the study database.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

PRIVATE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700
EPOCH_FILE = "admin_epoch"
PASSWORD_FILE = "admin_password_hash"


def private_folder(folder: Path) -> Path:
    """The instance folder, listable by its owner only (0700): created so, or tightened when it
    already exists with wider rights (``instance/`` comes from ``git clone`` as 0755). A folder
    owned by someone else is left as it is."""
    folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
    status = folder.stat()
    if status.st_mode & 0o077 and status.st_uid == os.getuid():
        folder.chmod(PRIVATE_FOLDER_MODE)
    return folder


def write_private(path: Path, text: str) -> Path:
    """Atomically replace ``path`` with ``text``, mode 0600 from the first byte, in a private
    (0700) folder."""
    private_folder(path.parent)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(handle, PRIVATE_MODE)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def create_private(path: Path) -> None:
    """Create an empty file with mode 0600 unless it exists (e.g. a new SQLite database); a
    folder made for it is 0700 (an existing one, possibly shared, is left as it is)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        pass


def read_optional(path: Path) -> str | None:
    """The stripped text of ``path``, or None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def rotate_epoch(instance: Path) -> str:
    """Start a new admin epoch: every admin session issued before is refused from now on."""
    epoch = secrets.token_hex(16)
    write_private(instance / EPOCH_FILE, epoch)
    return epoch


def current_epoch(instance: Path) -> str:
    """The admin epoch in force (created on first use)."""
    return read_optional(instance / EPOCH_FILE) or rotate_epoch(instance)
