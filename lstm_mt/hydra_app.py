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
            _remove_if_only_hydra_wrote_there()
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


def _remove_if_only_hydra_wrote_there() -> None:
    """After a refused command, remove its run folder if it holds nothing but what Hydra put there
    (``.hydra/`` and the job's log), so that a refused command leaves nothing behind."""
    from hydra.core.hydra_config import HydraConfig

    folder = Path(HydraConfig.get().runtime.output_dir)
    job_log = f"{HydraConfig.get().job.name}.log"
    hydra_files = {"config.yaml", "hydra.yaml", "overrides.yaml"}
    try:
        entries = {entry.name for entry in folder.iterdir()}
        if folder.resolve() == Path.cwd().resolve() or not entries <= {".hydra", job_log}:
            return
        if ".hydra" in entries and not {e.name for e in (folder / ".hydra").iterdir()} <= hydra_files:
            return
        for name in hydra_files:
            (folder / ".hydra" / name).unlink(missing_ok=True)
        for path in (folder / ".hydra", folder / job_log, folder):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
    except OSError:
        pass  # leave it: it is not ours to clean after all


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
