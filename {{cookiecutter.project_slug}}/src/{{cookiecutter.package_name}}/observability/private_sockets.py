"""Where the gunicorn master's listeners bind their Unix sockets.

Each socket is alone in a new folder of mode 0700, so that only this user's processes can
send to it. The folder is made in TMPDIR, or in /tmp when TMPDIR is so deep that the socket's
address would not fit in the 108 bytes Linux gives it (macOS's TMPDIR is long, and so can be
a container's or a test's).
"""

import os
import tempfile
from pathlib import Path

# sun_path's 108 bytes, its final NUL included.
MAX_ADDRESS_BYTES = 107
# Safe to share: what is made in it is a folder of mode 0700, with a name of its own.
SHORT_TEMPORARY_FOLDER = "/tmp"  # noqa: S108


def private_socket_address(prefix: str, name: str) -> Path:
    """The address for socket `name`, in a new private folder whose name starts with
    `prefix`; the caller removes the folder (the address's parent) when done."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if len(os.fsencode(folder / name)) <= MAX_ADDRESS_BYTES:
        return folder / name
    folder.rmdir()
    return Path(tempfile.mkdtemp(prefix=prefix, dir=SHORT_TEMPORARY_FOLDER)) / name
