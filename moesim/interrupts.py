"""Stop training cleanly on SIGINT/SIGTERM: at the end of the current step, with a completed step's parameters."""

from __future__ import annotations


class InterruptGuard:
    """Within this block SIGINT and SIGTERM stop training at the end of the current step.

    The first signal sets ``received`` (``"SIGINT"``/``"SIGTERM"``) and ``check()`` (called after
    each step) raises ``KeyboardInterrupt`` there, so the parameters are those of a completed step;
    a second signal raises at once. ``exit_code`` is 130 (SIGINT) or 143 (SIGTERM).
    """

    def __init__(self):
        self.received: str | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame):
        import signal

        first = self.received is None
        self.received = signal.Signals(signum).name
        if not first:
            raise KeyboardInterrupt

    def check(self) -> None:
        if self.received is not None:
            raise KeyboardInterrupt

    @property
    def exit_code(self) -> int:
        return 143 if self.received == "SIGTERM" else 130

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
