"""Progress of long one-off work, with an estimate of the time left: one line every few seconds.

The benchmark envs build their cached artefacts on first use (:mod:`infocnf_env.cache`): the
frozen flows' training, the reference solves, the baselines' grids. Each of these reports
through a :class:`Progress`: a line when it starts, then a line at most every ``every``
seconds (10 by default) with the work done, the time spent and the time left at the rate so
far, and a line when it ends. Lines, not a bar, so that a log file holds them as they were
printed; on stderr, so that the standard output of a CLI stays its result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

#: Seconds between two progress lines.
EVERY = 10.0


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``1 h 05 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Progress:
    """Progress lines of ``total`` units of work (:func:`update` after each).

    Args:
        what: names the work in every line (``"checkerboard flow"``).
        total: units of work in all (an upper bound where the work may end early).
        unit: the units' name, plural (``"iterations"``, ``"solves"``).
        start: the first line, printed at once (``None``: none).
        done: units already done before this session (a resumed training): the estimate uses
            the rate of this session's units only.
        log: where lines go (default: stderr; ``None``: nowhere).
        every: seconds between lines.
        clock: the time source (seconds; tests pass a fake one).
    """

    def __init__(self, what: str, total: int, unit: str, *, start: str | None = None, done: int = 0,
                 log: Callable[[str], None] | None = stderr, every: float = EVERY,
                 clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.unit = what, int(total), unit
        self.log, self.every, self.clock = log, every, clock
        self.first = self.done = int(done)
        self.started = self.last = clock()
        if start is not None and log is not None:
            log(start)

    def eta(self) -> float | None:
        """Seconds left at this session's rate so far (``None`` before its first unit)."""
        new = self.done - self.first
        if new <= 0:
            return None
        return (self.clock() - self.started) / new * max(0, self.total - self.done)

    def line(self, note: str = "") -> str:
        eta = self.eta()
        left = "" if eta is None else f", about {duration(eta)} left"
        tail = f"; {note}" if note else ""
        return (f"{self.what}: {self.done}/{self.total} {self.unit}, {duration(self.clock() - self.started)} "
                f"spent{left}{tail}")

    def update(self, done: int | None = None, note: str = "") -> None:
        """``done`` units finished (default: one more); a line if ``every`` seconds have passed."""
        self.done = self.done + 1 if done is None else int(done)
        now = self.clock()
        if self.log is not None and now - self.last >= self.every and self.done < self.total:
            self.last = now
            self.log(self.line(note))

    def finish(self, note: str = "") -> None:
        """The last line: the units done and the time it took."""
        if self.log is not None:
            tail = f"; {note}" if note else ""
            self.log(f"{self.what}: {self.done} {self.unit} done in {duration(self.clock() - self.started)}{tail}")
