"""Run a subcommand as a Hydra application, the one way every `lstm-mt` command does it.

`run_hydra(task, config_name, argv)` gives each subcommand Hydra's full command line
(``key=value`` overrides, ``--cfg job``, ``--help``, ``-m`` sweeps, ``hydra.run.dir=...``)
with the YAML configs shipped inside the package (``lstm_mt/configs/``, so a wheel
install works from any directory), and turns an
`LstmMtError` raised by the task into one ``error: ...`` line and exit status 2.
`report_warnings_on_stderr` shows lstm-mt's warnings on stderr while Hydra's logging setup is off.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from tqdm import tqdm

from lstm_mt.errors import LstmMtError, end_on_closed_pipe
from lstm_mt.files import check_output_dir

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def run_hydra(task: Callable[[DictConfig], Any], config_name: str, argv: list[str], prog: str) -> int | None:
    """Run ``task(cfg)`` with the config ``configs/<config_name>.yaml`` and ``argv`` overrides."""
    if not CONFIG_DIR.is_dir():
        raise LstmMtError(f"config folder {CONFIG_DIR} not found: the lstm-mt installation is incomplete, reinstall it")

    _check_run_dirs(argv)
    failure: list[LstmMtError] = []

    def guarded(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except LstmMtError as error:
            failure.append(error)
            return None
        except BrokenPipeError:  # Hydra would print it as a traceback
            end_on_closed_pipe()

    saved_argv = sys.argv
    sys.argv = [prog, *argv]
    try:
        hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(guarded)()
    finally:
        sys.argv = saved_argv
    if failure:
        raise failure[0]
    return 0


def _check_run_dirs(argv: list[str]) -> None:
    """Refuse a ``hydra.run.dir``/``hydra.sweep.dir`` that names a file before Hydra tries to create it."""
    for argument in argv:
        key, equals, value = argument.partition("=")
        if equals and key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") and "${" not in value:
            check_output_dir(value.strip("'\""), key.lstrip("+"))


def report_warnings_on_stderr() -> None:
    """Show lstm-mt's warnings as ``warning: ...`` lines on stderr, without breaking a tqdm bar.

    The commands keep Hydra's logging setup off, so that stdout carries only their output.
    """
    logger = logging.getLogger("lstm_mt")
    if not any(isinstance(handler, _TqdmHandler) for handler in logger.handlers):
        handler = _TqdmHandler(logging.WARNING)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        logger.addHandler(handler)


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)
