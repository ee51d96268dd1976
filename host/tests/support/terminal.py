"""A program driven through a pseudo-terminal, as a person types at it.

Used by the `kvstash shell` tests (host/tests/cli.rs, host/tests/serve.rs):

    term = Terminal([kvstash, "--data", dir, "shell"])
    term.until(b"kvstash:default> ")
    out = term.typed(b"get k\r", b"kvstash:default> ")
    sys.exit(term.exit(b"exit\r"))
"""

import os
import pty
import select
import signal
import sys
import time


class Terminal:
    def __init__(self, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(argv[0], argv)
        self.seen = b""

    def _read(self, end):
        """The next output, b"" at the program's end; on reaching `end`
        (a time), kills the program and exits non-zero."""
        left = end - time.time()
        if left <= 0 or not select.select([self.fd], [], [], left)[0]:
            os.kill(self.pid, signal.SIGKILL)
            sys.stdout.write(self.seen.decode(errors="replace"))
            sys.exit("timed out")
        try:
            return os.read(self.fd, 4096)
        except OSError:  # EIO: the program closed the terminal
            return b""

    def until(self, text, timeout=30):
        """Reads until `text` has been shown; what was shown since the last
        keys typed. Exits non-zero (after printing it) on a timeout, or if
        the program ends first."""
        end = time.time() + timeout
        while text not in self.seen:
            chunk = self._read(end)
            if not chunk:
                sys.stdout.write(self.seen.decode(errors="replace"))
                sys.exit("ended before showing %r" % text)
            self.seen += chunk
        return self.seen

    def typed(self, keys, wait):
        """Types `keys`, then waits for `wait`; returns what was shown."""
        self.seen = b""
        os.write(self.fd, keys)
        return self.until(wait)

    def exit(self, keys):
        """Types `keys` (the line that ends the program); its exit code."""
        os.write(self.fd, keys)
        return self.wait()

    def wait(self, timeout=120):
        """Reads what the program shows until it exits; its exit code.
        Everything it showed is in `seen`."""
        end = time.time() + timeout
        while True:
            chunk = self._read(end)
            if not chunk:
                break
            self.seen += chunk
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)
