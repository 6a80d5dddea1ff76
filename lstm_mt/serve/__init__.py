"""`lstm-mt serve`: an HTTP API and a live web page over a checkpoint.

config.py    ServeConfig (Hydra schema ``serve_schema``) and the request Limits
schemas.py   the JSON the API reads and writes (pydantic): checked input, OpenAPI examples
batching.py  DynamicBatcher: a bounded queue, batches of concurrent requests, one decoding thread
results.py   translations, attention and gate traces as JSON values
service.py   TranslationService: limits, defaults, the queue and the decoding of a batch
app.py       the FastAPI app: routes, error answers, body limit, the page in static/
command.py   `main`, the `lstm-mt serve` subcommand (uvicorn)

Only config.py and command.py load without the ``serve`` extra (FastAPI, uvicorn).
"""

from lstm_mt.serve.command import main
from lstm_mt.serve.config import Limits, ServeConfig

__all__ = ["Limits", "ServeConfig", "main"]
