"""Compression of rotated log files, in a thread of its own.

loguru compresses a rotated file in the thread that writes every line: 50 MB take
seconds, and all the while each worker waits to send its next line. Here that thread
only renames the file, out of sight of retention, and a thread of its own compresses it
(not a daemon: the master's exit waits for it).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import threading
import zipfile
from collections.abc import Callable
from io import BufferedIOBase
from pathlib import Path
from typing import Literal


def compress_in_background(compression: str) -> Callable[[str], None] | None:
    """loguru's `compression` for a file sink: None, or a function that loguru's writing
    thread calls with each rotated file, and that leaves the work to another thread."""
    if compression == "none":
        return None

    def compress_later(path: str) -> None:
        os.rename(path, _hidden(path))
        threading.Thread(target=_compress, args=(path, compression), name=_THREAD_NAME).start()

    return compress_later


def finish_compressions() -> None:
    """Wait until the rotated files are compressed. The threading module knows which
    threads run: a list of them would only have to be kept from growing."""
    for thread in threading.enumerate():
        if thread.name == _THREAD_NAME:
            thread.join()


_THREAD_NAME = "log-compression"
_OPENERS: dict[str, Callable[[str, Literal["wb"]], BufferedIOBase]] = {
    "gz": gzip.open,
    "bz2": bz2.open,
    "xz": lzma.open,
}


def _hidden(path: str) -> str:
    """A name loguru's retention does not glob for: it never deletes a file being worked on."""
    file = Path(path)
    return str(file.with_name(f".{file.name}.compressing"))


def _compress(path: str, compression: str) -> None:
    archive = f"{path}.{compression}"
    source, partial = _hidden(path), _hidden(archive)
    if compression == "zip":
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zipped:
            zipped.write(source, Path(path).name)
    else:
        with open(source, "rb") as raw, _OPENERS[compression](partial, "wb") as packed:
            shutil.copyfileobj(raw, packed)
    os.rename(partial, archive)  # retention and readers only ever see a whole archive
    os.remove(source)
