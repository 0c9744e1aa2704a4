"""Entry point of the ``geoop`` command (also ``python -m geoop``).

Exit codes: 0 success; 2 a failure the user can act on, reported as one line
``geoop <cmd>: error: <what, which file, what to do>`` (every :class:`~geoop.errors.GeoopError`,
a full disk, a path too long, a denied permission, memory exhausted; also argparse's usage
errors); 1 an internal error (a bug: one line, the traceback with ``-v``); 128 + N when ended
by signal N (SIGINT: 130, SIGTERM: 143; both end the same way: a message naming the last
complete checkpoint, temporary files removed).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import signal
import sys
import traceback
from typing import Optional, Sequence

from ..errors import GeoopError

#: OSError numbers reported as a user's problem (exit 2) with what to do
_OS_ADVICE = {
    errno.ENOSPC: "no space left on the device: free some space or write elsewhere; earlier outputs are unchanged",
    getattr(errno, "EDQUOT", -1): "disk quota exceeded: free some space or write elsewhere; earlier outputs are unchanged",
    errno.ENAMETOOLONG: "file name too long: use a shorter path",
    errno.EACCES: "permission denied: choose a folder you may write to",
    errno.EPERM: "operation not permitted: choose a folder you may write to",
    errno.EROFS: "read-only file system: write elsewhere",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "is a folder, expected a file",
}

_signal_received: list = []


def interrupt_signal() -> int:
    """The signal that interrupted the running command (SIGINT unless SIGTERM arrived)."""
    return _signal_received[-1] if _signal_received else signal.SIGINT


def _on_sigterm(signum, frame):
    """SIGTERM ends a command like Ctrl-C (KeyboardInterrupt: the same messages and clean-up)."""
    _signal_received.append(signum)
    raise KeyboardInterrupt


def _os_error_line(e: OSError) -> Optional[str]:
    advice = _OS_ADVICE.get(e.errno)
    if advice is None:
        return None
    files = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{files}: {advice}" if files else advice


def _memory_error_line(e: BaseException) -> Optional[str]:
    text = str(e)
    oom = isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()))
    if not oom:
        return None
    first = text.strip().splitlines()[0] if text.strip() else "memory exhausted"
    return (f"out of memory ({first}); use a smaller latent grid, batch_size or chunk size, or a machine with "
            "more memory")

#: sub-command name -> module under geoop.cli
COMMANDS = {
    "info": "info",
    "data": "data",
    "train": "train",
    "predict": "predict",
    "evaluate": "evaluate",
    "calibrate": "calibrate",
    "render": "render",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geoop", description="Neural operators on arbitrary geometry.")
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in COMMANDS.items():
        try:
            m = importlib.import_module(f"geoop.cli.{mod}")
        except ModuleNotFoundError as e:  # sub-command not built in this version
            if e.name != f"geoop.cli.{mod}":
                raise
            continue
        p = m.add_parser(sub)
        p.set_defaults(_run=m.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    _signal_received.clear()
    previous = {}
    try:  # SIGTERM as Ctrl-C; Ctrl-C as KeyboardInterrupt unless the caller ignores it (a background job)
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_sigterm)
        if signal.getsignal(signal.SIGINT) == signal.SIG_DFL:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: leave the signals alone
        pass
    try:
        return _main(argv)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _main(argv: Optional[Sequence[str]]) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        sig = interrupt_signal()
        print(f"geoop: {'terminated (SIGTERM)' if sig == signal.SIGTERM else 'interrupted'}", file=sys.stderr)
        return 128 + int(sig)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    cmd = f"geoop {args.command}"
    try:
        return int(args._run(args) or 0)
    except GeoopError as e:
        print(f"{cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        sig = interrupt_signal()
        print(f"{cmd}: {'terminated (SIGTERM)' if sig == signal.SIGTERM else 'interrupted'}", file=sys.stderr)
        return 128 + int(sig)
    except Exception as e:
        line = _os_error_line(e) if isinstance(e, OSError) else _memory_error_line(e)
        if line is not None:
            if args.verbose:
                traceback.print_exc()
            print(f"{cmd}: error: {line}", file=sys.stderr)
            return 2
        if args.verbose:
            traceback.print_exc()
        print(f"{cmd}: internal error: {type(e).__name__}: {e} (a bug in geoop; run with -v for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
