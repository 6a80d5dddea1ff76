"""The one exception type users see: a clear, single-line message instead of a traceback."""


class LstmMtError(Exception):
    """A problem with the user's input (file, line, config key) that the CLI reports in one line.

    Raise it with a message that names what is at fault, e.g.
    ``LstmMtError("data/train.de:17: invalid UTF-8")``. The CLI prints ``error: <message>``
    and exits with status 2; library users can catch it like any exception.
    """
