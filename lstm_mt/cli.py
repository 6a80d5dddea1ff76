"""The `lstm-mt` command: one entry point, one subcommand per job.

Each subcommand lives in the module that does the work and is imported only when run,
so `lstm-mt --help` stays fast. Errors in the user's input (`LstmMtError`) are printed as
one line, never as a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import NamedTuple

from lstm_mt import __version__
from lstm_mt.errors import LstmMtError, end_on_closed_pipe


class Subcommand(NamedTuple):
    """Where a subcommand's ``main(argv)`` lives and what it does."""

    target: str  # "module:function", called with the remaining arguments
    summary: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "train": Subcommand("lstm_mt.train:main", "train a model (Hydra config + overrides)"),
    "evaluate": Subcommand("lstm_mt.evaluate:main", "BLEU/chrF of a checkpoint on test sets (sacreBLEU)"),
    "translate": Subcommand("lstm_mt.translate:main", "translate a file or stdin, one line out per line in"),
    "average": Subcommand("lstm_mt.average:main", "average the last N checkpoints into one"),
    "inspect": Subcommand(
        "lstm_mt.inspection:main", "gates, cell states and attention of a checkpoint, sentence by sentence"
    ),
    "serve": Subcommand("lstm_mt.serve:main", "HTTP API and live web page: translations, attention, gates"),
    "recipe": Subcommand(
        "lstm_mt.recipe:main", "a result recipe's later steps: tune decoding on val, test, compare two runs"
    ),
    "bench": Subcommand("lstm_mt.bench:main", "time the explicit LSTM against torch.nn.LSTM"),
}

USAGE = """usage: lstm-mt <command> [args...]
       lstm-mt --version

Neural machine translation with an explicit, gate-by-gate LSTM.

commands:
{commands}

Run `lstm-mt <command> --help` for a command's options."""


def usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = [f"  {name.ljust(width)}  {cmd.summary}" for name, cmd in SUBCOMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def resolve(target: str) -> Callable[[list[str]], int | None]:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: list[str] | None = None) -> None:
    """Dispatch ``argv`` (default: the process arguments) to a subcommand and exit with its status."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        status = dispatch(argv)
    except LstmMtError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # e.g. `lstm-mt translate ... | head`: the reader left, nothing to report
        end_on_closed_pipe()
    sys.exit(status or 0)


def dispatch(argv: list[str]) -> int | None:
    """Run the subcommand ``argv[0]`` (or print the usage or version) and return its status."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"lstm-mt {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"lstm-mt: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    return resolve(SUBCOMMANDS[name].target)(rest)
