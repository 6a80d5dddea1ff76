"""The one exception type users see: a clear, single-line message instead of a traceback;
and `end_on_closed_pipe`, the quiet end when the reader of stdout has gone."""

import os
import sys


class LstmMtError(Exception):
    """A problem with the user's input (file, line, config key) that the CLI reports in one line.

    Raise it with a message that names what is at fault, e.g.
    ``LstmMtError("data/train.de:17: invalid UTF-8")``. The CLI prints ``error: <message>``
    and exits with status 2; library users can catch it like any exception.
    """


CLOSED_PIPE_STATUS = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left


def end_on_closed_pipe() -> None:
    """Exit quietly after a `BrokenPipeError` on stdout (``lstm-mt translate ... | head -1``).

    stdout is pointed at /dev/null first, so that Python's own flush at exit does not report
    the closed pipe again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a real file (tests capture it): nothing left to flush
    finally:
        os.close(devnull)
    raise SystemExit(CLOSED_PIPE_STATUS)
