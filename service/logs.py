"""JSON log lines on stdout: one object per line, easy to ship and query."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else came in through `extra=` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((key, value) for key, value in vars(record).items() if key not in _STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class WorkerFields(logging.Filter):
    """Tags every line of a worker process with its index and pid, so one worker's story can be followed."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.pid = os.getpid()

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        record.worker_pid = self.pid
        return True


def logging_config(level: str, worker: int | None = None) -> dict[str, Any]:
    """dictConfig for our loggers and uvicorn's, all as JSON on stdout; uvicorn's access log is off."""
    handler: dict[str, Any] = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    filters: dict[str, Any] = {}
    if worker is not None:
        filters["worker"] = {"()": WorkerFields, "index": worker}
        handler["filters"] = ["worker"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": filters,
        "handlers": {"stdout": handler},
        "loggers": {
            "catsdogs": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def configure(level: str, worker: int | None = None) -> None:
    logging.config.dictConfig(logging_config(level, worker))
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
