"""Ctrl-C and SIGTERM as exceptions, never raised inside an import.

A KeyboardInterrupt raised while a module is being imported leaves that module half made:
numpy's C start-up then fails with an ImportError, onnx_ir's import crashed the process
(SIGSEGV), and an interrupt that escapes Python code an extension runs with PyRun_String
marks the process as interrupted, so it ends killed by SIGINT although the CLI printed
"interrupted" and returned 130 (about 1 start-up interrupt in 10 on the Zen 4 and Zen 5
VMs). Our commands import their libraries lazily, so start-up is mostly imports.

``install()`` gives SIGINT and SIGTERM handlers that raise KeyboardInterrupt and
``Terminated`` as before, except when an import is on the stack: then the signal is held and
delivered, as the same exception, the moment no import is running (re-checked every
RETRY_SECONDS by a SIGALRM timer; where that signal is not ours, nothing is held).
"""

from __future__ import annotations

import signal

IMPORT_FRAMES = "<frozen importlib._bootstrap"  # _bootstrap and _bootstrap_external
RETRY_SECONDS = 0.01


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every ``finally`` cleans up; a
    BaseException, as KeyboardInterrupt is, so that no ``except Exception`` (ours or a
    library's, such as onnx_ir's loader) takes it for an error of its own."""


_held: list[int] = []  # signals that came during an import, oldest first


def _importing(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith(IMPORT_FRAMES):
            return True
        frame = frame.f_back
    return False


def _raise(number: int):
    if number == signal.SIGTERM:
        raise Terminated
    raise KeyboardInterrupt


def _can_hold() -> bool:
    return hasattr(signal, "setitimer") and signal.getsignal(signal.SIGALRM) is _retry


def raise_outside_imports(number, frame):
    if _importing(frame) and _can_hold():
        if not _held:
            signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
        _held.append(number)
        return
    _raise(number)


def _retry(_number, frame):
    if not _held:
        return
    if _importing(frame):
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
        return
    number = _held[0]
    _held.clear()  # one exception for however many came
    _raise(number)


def install() -> None:
    """Our handlers, for each of SIGINT, SIGTERM and SIGALRM that still has its default (so a
    host process's own handlers stay as they are)."""
    defaults = {
        signal.SIGINT: signal.default_int_handler,
        signal.SIGTERM: signal.SIG_DFL,
    }
    if hasattr(signal, "SIGALRM"):
        if signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, _retry):
            signal.signal(signal.SIGALRM, _retry)
    for number, default in defaults.items():
        if signal.getsignal(number) is default:
            signal.signal(number, raise_outside_imports)
