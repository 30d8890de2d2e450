"""Ctrl-C and SIGTERM during a study: stop cleanly at any moment, never between two halves of a write.

A signal that arrives while a trial measures (a backend call: the long part) stops that measurement at once;
anywhere else - creating the trial, writing its attributes or the accuracy cache, telling Optuna its result,
saving the front - it only raises a flag that is checked at the next safe point (the trial's next measurement,
or the end of the trial). So a trial is never left RUNNING, Optuna's own bookkeeping never sees a
KeyboardInterrupt (it had an `UnboundLocalError` on that path), and the interrupted trial ends FAIL with its
parameters queued again, to run first when the study resumes (`StopOnSignal`).

Outside a study - every CLI command, `tune` while the model loads - a signal is a KeyboardInterrupt, recorded
(`InterruptOnSignal`), and deferred while torch and transformers import (`import_runtime`).

A stdout whose reader went away (`advisor tune | head -1`) stops a tune the same way (`stdout_console`).
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from advisor import startup


class Interrupted(Exception):
    """The trial was stopped by Ctrl-C/SIGTERM (Optuna marks it FAIL; the run then stops)."""


class _QuietInterrupted(logging.Filter):
    """Drop Optuna's two warnings for an interrupted trial - "Trial N failed with parameters ... Interrupted"
    with its traceback, then "Trial N failed with value None." - the CLI says it in one line. Other trials'
    warnings pass."""

    def __init__(self, interrupted: list[int]) -> None:
        super().__init__()
        self.interrupted = interrupted  # the trial numbers StopOnSignal stopped, appended before they raise

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], Interrupted):
            return False
        msg = record.getMessage()
        return not any(msg.startswith(f"Trial {n} failed with value ") for n in self.interrupted)


class _SignalInterrupt(KeyboardInterrupt):
    """The KeyboardInterrupt a handler of ours raises, with how to deliver its signal again (`_redelivered`)."""

    def __init__(self, again: Callable[[], None]) -> None:
        super().__init__()
        self.again = again


def _deliver_soon(signum: int) -> None:
    """`signum` to the main thread's handler in a moment, from another thread: not inside the code running now."""
    def deliver() -> None:
        time.sleep(0.01)
        _thread.interrupt_main(signum)

    threading.Thread(target=deliver, name="advisor-redeliver-signal", daemon=True).start()


@contextlib.contextmanager
def _redelivered() -> Iterator[None]:
    """While a handler of ours is in force: a KeyboardInterrupt it raised inside a finalizer or a weakref callback
    (`__del__`, a WeakSet's clean-up: code that runs at any moment), which Python can only print as "Exception
    ignored in ..." with a traceback and drop, is delivered again once that code has run. Seen in about 1 of 80
    signals to `advisor tune`; in the other commands the Ctrl-C was dropped and the command ran on to its end."""
    previous = sys.unraisablehook

    def hook(args: Any) -> None:
        if isinstance(args.exc_value, _SignalInterrupt):
            args.exc_value.again()
        else:
            previous(args)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous


class InterruptOnSignal:
    """Outside a study: SIGINT and SIGTERM raise a KeyboardInterrupt (SIGTERM stops a command as Ctrl-C does),
    and `received` records them - a library may swallow that KeyboardInterrupt or turn it into another error,
    and a caller that handles neither can still tell. Inside `deferred()` they are only recorded. A signal the
    shell told the process to ignore (a script's background job's SIGINT) stays ignored, and leaving the block
    puts the handlers back as they were. Only the main thread can install handlers; elsewhere this does nothing."""

    active: list[InterruptOnSignal] = []
    """The instances whose handlers are in force, innermost last."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._defer = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> InterruptOnSignal:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._hook = _redelivered()
        self._hook.__enter__()
        try:
            with self.deferred():  # a signal while the handlers go in: raised once they all are
                for sig in (signal.SIGINT, signal.SIGTERM):
                    if signal.getsignal(sig) is not signal.SIG_IGN:
                        self._old[sig] = signal.signal(sig, self._handle)
        except KeyboardInterrupt:
            self._restore()
            raise
        InterruptOnSignal.active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
        if self in InterruptOnSignal.active:
            InterruptOnSignal.active.remove(self)

    def _restore(self) -> None:
        self._defer = True  # one handler back and not yet the other: a signal now is recorded, not raised
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        if getattr(self, "_hook", None) is not None:
            self._hook.__exit__(None, None, None)
            self._hook = None

    def ignore_from_now(self) -> None:
        """The command has finished - its output is written, its exit status chosen: SIGINT and SIGTERM are ignored
        for the rest of the process, leaving the block included. Python's exit (threads joined, atexit callbacks,
        its modules and torch's C++ state torn down: a second or two) ran with Python's default SIGINT handler and
        SIGTERM's default action, and from the middle of it with both default actions (Python puts them back
        before it tears its modules down; an ignored signal it leaves ignored), so a signal there ended the
        process by that signal (-2, -15 to a parent, no line) or printed a KeyboardInterrupt traceback. A shell's
        ignored SIGINT stays ignored; SIGKILL still ends an exit that hangs."""
        for sig in self._old:
            signal.signal(sig, signal.SIG_IGN)
            self._old[sig] = signal.SIG_IGN  # what leaving the block puts back

    def _handle(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if not self._defer:
            raise _SignalInterrupt(lambda: self._again(signum))

    def _again(self, signum: int) -> None:
        """The signal once more: its KeyboardInterrupt was dropped inside a finalizer (`_redelivered`)."""
        if signum in self.received:
            self.received.remove(signum)  # recorded again when it comes
        _deliver_soon(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals in the block are recorded only; the KeyboardInterrupt comes once it has finished (torch's and
        transformers' first import: a KeyboardInterrupt inside their C++ start-up aborted the process)."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
        if self.received:
            raise KeyboardInterrupt


def import_runtime(*, models: bool = True) -> None:
    """torch and, with `models`, transformers' model code and the project's model classes, imported once
    (seconds) with Ctrl-C and SIGTERM deferred until they have: a KeyboardInterrupt inside torch's C++ start-up
    aborted the process, inside numpy's or transformers' import it became another error ("cannot load module
    more than once", "does not recognize"), and inside an exec() there (a dataclass being made) Python ended
    by SIGINT after the one line. Every command that imports them calls this first; the KeyboardInterrupt comes
    once the imports are done, and the handler in force (the CLI's, `tune`'s) has recorded the signal.

    In the CLI's process, what they made is then frozen out of the garbage collector's reach (`startup.settle`)."""
    with contextlib.ExitStack() as stack:
        stack.callback(startup.settle)  # also when a deferred signal raises at the end
        signals = InterruptOnSignal.active[-1] if InterruptOnSignal.active else stack.enter_context(InterruptOnSignal())
        stack.enter_context(signals.deferred())
        if models:  # the variables transformers' import reads (huggingface_hub's, accelerate's...): one line, first
            from advisor.hub import check_import

            check_import("transformers")
        import torch  # noqa: F401

        if models:
            import transformers.modeling_utils  # noqa: F401

            import advisor.models.llada2  # noqa: F401
            import advisor.models.llada_moe  # noqa: F401
            import advisor.models.load  # noqa: F401


class StopOnSignal:
    """While active, SIGINT/SIGTERM set `requested`; inside `measuring()` they also stop the trial at once. An
    ignored signal stays ignored, as in `InterruptOnSignal`."""

    def __init__(self) -> None:
        self.requested = False
        self._armed = False
        self._old: dict[int, Any] = {}
        self.interrupted_trials: list[int] = []
        self._filter = _QuietInterrupted(self.interrupted_trials)

    def __enter__(self) -> StopOnSignal:
        logging.getLogger("optuna.study._optimize").addFilter(self._filter)
        self._hook: Any = None
        if threading.current_thread() is threading.main_thread():
            self._hook = _redelivered()
            self._hook.__enter__()
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self._hook is not None:
            self._hook.__exit__(None, None, None)
        logging.getLogger("optuna.study._optimize").removeFilter(self._filter)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        if self._armed:
            self._armed = False
            raise _SignalInterrupt(lambda: self._again(signum))

    def _again(self, signum: int) -> None:
        """The signal once more: its KeyboardInterrupt was dropped inside a finalizer while the trial measured
        (`_redelivered`); it stops the measurement if that still runs when it comes."""
        self._armed = True
        _deliver_soon(signum)

    def measuring(self, backend: Any) -> Any:
        """`backend` whose measurements (its methods) a signal stops at once; everything else - the study's
        writes, the cache's writes - finishes first, so no transaction is cut in half."""
        return _Measuring(backend, self)

    def wrap(self, objective: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """The objective, stoppable: a stopped measurement fails the trial (its number kept for re-queueing)
        and ends the study after it."""

        def run(trial: Any) -> Any:
            try:
                if self.requested:
                    raise KeyboardInterrupt
                return objective(trial)
            except KeyboardInterrupt:
                self.requested = True
                self.interrupted_trials.append(trial.number)
                trial.study.stop()
                raise Interrupted(f"trial {trial.number} interrupted") from None

        return run

    def stop_if_requested(self, study: Any, trial: Any) -> None:
        """An Optuna callback: end the run after this trial when a stop was asked for."""
        if self.requested:
            study.stop()


def requeue(study: Any, numbers: list[int]) -> None:
    """Queue the parameters of interrupted (FAIL) trials again, so that resuming runs them first. A baseline
    trial (`advisor.tune.baseline_trials`: its configuration in the user attr ``fixed_params``, no Optuna
    parameters) is queued again with its attrs, so it stays that baseline."""
    from optuna.trial import TrialState

    from advisor.results.sqlite_storage import queue_trial

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for n in numbers:
        t = trials[n]
        if t.state != TrialState.FAIL:
            continue
        if "fixed_params" in t.user_attrs:
            queue_trial(study, {}, {**t.user_attrs, "retry_of": n})
            continue
        params = {**(t.system_attrs.get("fixed_params") or {}), **t.params}
        if params:
            queue_trial(study, params, {"retry_of": n})


class _Measuring:
    """A backend proxy: each method call is a measurement that a signal may stop."""

    def __init__(self, backend: Any, stop: StopOnSignal):
        self._backend, self._stop = backend, stop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._backend, name)
        if not callable(attr):
            return attr
        stop = self._stop

        def measure(*args: Any, **kwargs: Any) -> Any:
            if stop.requested:
                raise KeyboardInterrupt
            stop._armed = True
            try:
                return attr(*args, **kwargs)
            finally:
                stop._armed = False

        return measure


def stdout_console() -> Any:
    """`tune`'s rich Console on stdout: when its reader goes away (`advisor tune | head -1`), the rest of the output
    goes to /dev/null and the tune stops as for Ctrl-C - the trial in flight failed and queued again, finished
    trials kept, one line on stderr (`closed` says why). rich's default raised SystemExit(1) from the print: exit 1
    without a word, and from the piped progress thread it only ended that thread. A SIGINT the shell told the
    process to ignore stays ignored: the tune then runs to its end, its output discarded."""
    from rich.console import Console

    from advisor.terminal import print_rich, print_wrapped

    class _StdoutConsole(Console):
        closed = False

        def print(self, *objects: Any, **kwargs: Any) -> None:
            """A line of text (markup or not) as rich prints it, without the space rich leaves at the end of each
            line where it broke it (`print_rich`): piped at 80 columns the header and notes ended in spaces. Plain
            text (`markup=False`: the notes) is wrapped as every other note of the tool (`print_wrapped`), never
            inside a `quoted command`: rich broke the --budgets note's `advisor | recommend` across two lines."""
            if len(objects) == 1 and isinstance(objects[0], str) and kwargs == {"markup": False}:
                print_wrapped(self, objects[0])
            elif len(objects) == 1 and isinstance(objects[0], str) and set(kwargs) <= {"markup"}:
                print_rich(self, objects[0], markup=kwargs.get("markup"))
            else:
                super().print(*objects, **kwargs)

        def on_broken_pipe(self) -> None:
            self.quiet = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's documented pattern
            if not self.closed:
                self.closed = True
                signal.raise_signal(signal.SIGINT)  # the handler in force, in the main thread (from any thread)

    return _StdoutConsole(stderr=False)
