"""SIGINT and SIGTERM end a run the one way pytest knows: a KeyboardInterrupt.

pytest then prints the summary of what finished, the plugin marks the run
``interrupted`` (never a baseline) and the exit code is 1.

Frameworks take the signals over. MindSpore installs a C-level SIGINT handler
from its runtime threads (the PyNative op queue, the graph scheduler) the first
time they run, and later again; that handler sends the process SIGTERM
(`kill(getpid(), SIGTERM)`), whose default action ended the run at once with
143, no summary and the run left ``running``. Two things keep ours:

- SIGTERM is ours too, so a SIGINT that MindSpore turned into SIGTERM still
  arrives as the KeyboardInterrupt;
- :func:`reclaim` installs ours again at the C level after every case, so a
  signal between cases never meets a framework's handler.

A framework may also swallow the KeyboardInterrupt: a Ctrl-C while MindSpore
exported EfficientNet-B0 to ONNX was lost, the export passed and the run went
on (where MindSpore catches it was not pinned down). Every signal is
remembered, and :func:`check` raises the interrupt again when the case
returns as if nothing happened.

Child processes (msrun, torchrun, atc, trtexec, ais_bench) run under
``subprocess.run``, which kills the child when the KeyboardInterrupt reaches it.
A framework call that does not return to Python (a long C++ kernel) delays the
interrupt until it does.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _message(signum: int) -> str:
    return f"{signal.Signals(signum).name}: the run stops; what finished stays stored"


class Interrupts:
    """Holds SIGINT and SIGTERM for one pytest run, and gives the previous handlers back."""

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}
        self.received: int | None = None  # the first signal: the run is over once one came

    def _interrupt(self, signum, frame):
        if self.received is None:
            self.received = signum
        raise KeyboardInterrupt(_message(signum))

    def hold(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python lets only the main thread set handlers; pytest runs there
        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._interrupt)

    def reclaim(self) -> None:
        """Install ours again at the C level (a framework may have replaced it without Python knowing)."""
        for sig in self._previous:
            signal.signal(sig, self._interrupt)

    def check(self) -> None:
        """Raise the interrupt again if a signal came and something swallowed its KeyboardInterrupt."""
        if self.received is not None:
            raise KeyboardInterrupt(_message(self.received))

    def release(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
