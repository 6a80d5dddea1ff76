"""`lstm-mt serve`: load a checkpoint and answer HTTP on ``host:port`` with uvicorn until SIGTERM/Ctrl-C.

    lstm-mt serve checkpoint=runs/x/checkpoints/best.pt port=8000
    lstm-mt serve checkpoint=best.pt search.beam_size=1 limits.max_sentences=16 threads=2

FastAPI and uvicorn come with ``pip install 'lstm-mt[serve]'``; without them the command says so.
"""

from __future__ import annotations

import importlib.util
import socket
import sys

from omegaconf import DictConfig

from lstm_mt.configuring import typed_config
from lstm_mt.errors import LstmMtError
from lstm_mt.hydra_app import report_warnings_on_stderr, run_hydra
from lstm_mt.serve.config import ServeConfig, register_configs

REQUIRED_MODULES = ("fastapi", "uvicorn")


def main(argv: list[str] | None = None) -> int | None:
    """`lstm-mt serve checkpoint=PATH [host=...] [port=...] [key=value ...]`."""
    register_configs()
    return run_hydra(run_serve, "serve", sys.argv[1:] if argv is None else argv, "lstm-mt serve")


def run_serve(cfg: DictConfig) -> None:
    """Serve ``cfg.checkpoint`` until stopped; requests in flight are answered before the process exits."""
    config = typed_config(ServeConfig, cfg, "serve config")
    require_serve_extra()
    import uvicorn

    from lstm_mt.serve.app import create_app
    from lstm_mt.serve.service import TranslationService

    config.check()
    report_warnings_on_stderr()
    app = create_app(TranslationService.from_config(config))
    sock = listen(config.host, config.port)
    port = sock.getsockname()[1]
    print(f"lstm-mt serve: http://{config.host}:{port}/ (API: /v1/translate, docs: /docs)", file=sys.stderr, flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=config.log_level, timeout_graceful_shutdown=config.shutdown_timeout_s)
    )
    server.run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: any free port); `LstmMtError` if that is impossible."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise LstmMtError(f"host={host} port={port}: cannot listen ({error.strerror or error})") from None


def require_serve_extra() -> None:
    """Raise `LstmMtError` naming the install command if FastAPI or uvicorn is missing."""
    missing = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise LstmMtError(f"lstm-mt serve needs {' and '.join(missing)}: pip install 'lstm-mt[serve]'")
