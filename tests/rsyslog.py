"""A real rsyslog on loopback, receiving syslog over TCP (imtcp) into a file.

The Debian package's rsyslogd runs in the foreground with a configuration of its own on a
free port, writes the MSG of every message it receives as one line of `received`, and is
stopped by its process id. `restart` stops it and starts it again on the same port.
"""

import socket
from pathlib import Path

from harness.loopback import LOOPBACK, LoopbackProcess

from .prometheus import require_binary

# MSG alone, one a line: each is the service's JSON line. maxMessageSize, above imtcp's 8 KB
# default, keeps a line with a stack trace whole; it must come before the modules load.
CONFIG = """\
global(workDirectory="{workdir}" maxMessageSize="256k")
module(load="imtcp")
template(name="message_only" type="string" string="%procid% %msg%\\n")
ruleset(name="received") {{
    action(type="omfile" file="{received}" template="message_only")
}}
input(type="imtcp" address="{host}" port="{port}" ruleset="received")
"""


class Rsyslog(LoopbackProcess):
    def __init__(self, workdir: Path):
        self.workdir = workdir / "rsyslog"
        self.workdir.mkdir(parents=True)
        super().__init__("rsyslogd", self.workdir / "output.log")
        self.address = f"{LOOPBACK}:{self.port}"
        self.received = self.workdir / "received.log"
        config = self.workdir / "rsyslog.conf"
        config.write_text(CONFIG.format(
            workdir=self.workdir, received=self.received, host=LOOPBACK, port=self.port
        ))  # fmt: skip
        self.command = [require_binary("rsyslogd", "rsyslog"), "-n", "-f", str(config),
                        "-i", str(self.workdir / "rsyslogd.pid")]  # fmt: skip

    def start(self) -> "Rsyslog":
        return self.launch(self.command, self.workdir)

    def restart(self) -> "Rsyslog":
        self.stop()
        return self.start()

    def is_ready(self) -> bool:
        try:
            socket.create_connection((LOOPBACK, self.port), timeout=2).close()
        except OSError:
            return False
        return True

    def lines(self) -> list[tuple[str, str]]:
        """(PROCID, MSG) of every message received so far."""
        if not self.received.exists():
            return []
        text = self.received.read_text(encoding="utf-8")
        complete = text[: text.rfind("\n") + 1]  # a line being written is not whole yet
        return [tuple(line.split(" ", 1)) for line in complete.splitlines()]
