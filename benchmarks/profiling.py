"""Where one worker's time goes under load: py-spy samples, summed per function.

The raw samples (collapsed stacks, one per line) are kept for flame graph tools; the
summary is the share of the worker's main-thread samples spent in each function,
callees included, and spent in the function's own code.
"""

import re
import subprocess
import time
from collections import Counter
from pathlib import Path

from harness.gunicorn_service import Gunicorn

from .environment import venv_tool
from .throughput import ENDPOINT

SAMPLES_PER_SECOND = 250
# "name (path/to/file.py:12)": keep the name and the file, drop the line and the folders.
FRAME = re.compile(r"^(?P<name>.*) \((?:.*/(?:site-packages|src)/)?(?P<file>[^:]*)(?::\d+)?\)$")


def profile_worker(server: Gunicorn, seconds: int, connections: int, output: Path) -> dict:
    """Record one worker while wrk loads the service a little longer than the recording."""
    load = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds + 4}s", server.url + ENDPOINT],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)  # past wrk's first connections
        subprocess.run(
            [
                venv_tool("py-spy"),
                "record",
                "--pid",
                str(server.worker_pids()[0]),
                "--duration",
                str(seconds),
                "--rate",
                str(SAMPLES_PER_SECOND),
                "--threads",
                "--format",
                "raw",
                "--output",
                output,
            ],
            check=True,
            capture_output=True,
            timeout=seconds + 60,
        )
    finally:
        load.wait(timeout=seconds + 30)
    return summarize(output.read_text())


def summarize(collapsed: str, top: int = 40) -> dict:
    """Inclusive and own shares of the main thread's samples, per function (not per line)."""
    inclusive, own, total = Counter(), Counter(), 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *frames = stack.split(";")
        if "MainThread" not in thread or not frames:
            continue
        names = [_short(frame) for frame in frames]
        total += int(count)
        for name in set(names):
            inclusive[name] += int(count)
        own[names[-1]] += int(count)
    return {
        "samples": total,
        "inclusive_percent": _percentages(inclusive, total, top),
        "own_percent": _percentages(own, total, top),
    }


def _short(frame: str) -> str:
    match = FRAME.match(frame)
    return f"{match['name']} ({match['file']})" if match else frame


def _percentages(counter: Counter, total: int, top: int) -> dict:
    """The largest shares, less gunicorn's start-up frames, which are in every sample."""
    shares = {name: round(100 * count / total, 1) for name, count in counter.most_common()}
    return dict(list((name, share) for name, share in shares.items() if share < 99)[:top])
