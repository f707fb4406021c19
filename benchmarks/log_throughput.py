"""Log lines per second through the master-side sinks, and how many arrive.

Runs in the benchmark's environment from a baked project's folder, with its `src` on
PYTHONPATH and LOG_* settings in the environment. It does what gunicorn does with the
project's gunicorn.conf.py: runs it in this process (the master: settings, sinks), forks
children that run its `post_fork` hook (the workers) and log their lines as fast as they
can, then runs `on_exit`. It then counts the lines in the rotated files and on the
console, and prints the figures as JSON.

    python log_throughput.py --children 4 --lines 25000 --console console.log
"""

import argparse
import gzip
import json
import os
import re
import runpy
import time
import zipfile
from collections import Counter
from pathlib import Path

from loguru import logger

LINE = re.compile(r"bench line (\d+) (\d+)")


def main() -> None:
    options = _parse_arguments()
    _send_stdout_to(options.console)
    hooks = runpy.run_path("gunicorn.conf.py")  # the master's set-up, sinks included
    started = time.perf_counter()
    children = [_fork_child(hooks, number, options.lines) for number in range(options.children)]
    for pid in children:
        os.waitpid(pid, 0)
    sent = time.perf_counter()
    _call_hook(hooks, "on_exit", None)  # the master writes what is still on its way
    written = time.perf_counter()
    logger.remove()  # closes the file
    expected = options.children * options.lines
    print_result(
        {
            "children": options.children,
            "lines": expected,
            "seconds_to_send": round(sent - started, 3),
            "seconds_to_write": round(written - started, 3),
            "lines_per_second": round(expected / (written - started)),
            "log_files": len(_log_files()),
            "file": _losses(_file_lines(), expected),
            "console": _losses(_text_lines(options.console), expected),
        }
    )


def _parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument("--lines", type=int, default=25_000, help="per child")
    parser.add_argument("--console", type=Path, required=True, help="where stdout goes")
    return parser.parse_args()


def _send_stdout_to(path: Path) -> None:
    # The console sink writes to file descriptor 1: point it at a file we can count.
    with path.open("wb") as console:
        os.dup2(console.fileno(), 1)


def _fork_child(hooks: dict, number: int, lines: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    _call_hook(hooks, "post_fork", None, None)
    for line in range(lines):
        logger.info("bench line {} {}", number, line)
    os._exit(0)  # no atexit handlers of the parent in a child


def _call_hook(hooks: dict, name: str, *arguments) -> None:
    if name in hooks:
        hooks[name](*arguments)


def _log_files() -> list[Path]:
    log_file = Path(os.environ["LOG_FILE"])
    return sorted(log_file.parent.glob(f"{log_file.stem}*"))


def _file_lines() -> list[str]:
    return [line for path in _log_files() for line in _read_lines(path)]


def _read_lines(path: Path) -> list[str]:
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes()).decode().splitlines()
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            return [
                line
                for name in archive.namelist()
                for line in archive.read(name).decode().splitlines()
            ]
    return _text_lines(path)


def _text_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _losses(lines: list[str], expected: int) -> dict:
    seen = Counter(match.groups() for line in lines if (match := LINE.search(line)))
    return {
        "written": sum(seen.values()),
        "lost": expected - len(seen),
        "duplicated": sum(count - 1 for count in seen.values()),
    }


def print_result(result: dict) -> None:
    # stdout is the console log now: the result goes to stderr.
    os.write(2, (json.dumps(result) + "\n").encode())


if __name__ == "__main__":
    main()
