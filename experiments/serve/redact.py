"""Keep the API key out of every file and every line printed: whatever a server echoes back (a 401 saying
"Incorrect API key provided: Bearer sk-..."), an exception's text, a header, the key's value is replaced by
``***`` before the point stores or logs it."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from experiments.framework.spec import VariantResult

MASK = "***"


@dataclasses.dataclass(frozen=True)
class Redactor:
    """Replaces ``secret`` in text, tables and results (nothing to do when there is no secret)."""

    secret: str | None

    def text(self, value: Any) -> Any:
        if self.secret and isinstance(value, str) and self.secret in value:
            return value.replace(self.secret, MASK)
        return value

    def table(self, table: Mapping[str, Any]) -> dict[str, Any]:
        """A columnar table with every string cell redacted."""
        return {k: [self.text(v) for v in col] if isinstance(col, (list, tuple)) else self.text(col)
                for k, col in table.items()}

    def result(self, r: VariantResult) -> VariantResult:
        return dataclasses.replace(r, variant=self.text(r.variant), error=self.text(r.error),
                                   metrics={k: self.text(v) for k, v in r.metrics.items()},
                                   sidecars={stem: self.table(t) for stem, t in r.sidecars.items()})

    @contextlib.contextmanager
    def logging(self) -> Iterator[None]:
        """While the block runs, every log record reaching a handler of the root logger (the console, the job's
        log file) is redacted; an exception leaving the block carries a redacted message."""
        if not self.secret:
            yield
            return
        handlers = list(logging.getLogger().handlers)
        flt = _Filter(self)
        for h in handlers:
            h.addFilter(flt)
        try:
            yield
        except Exception as exc:
            raise RedactedError(self.text(f"{type(exc).__name__}: {' '.join(str(exc).split())}")) from None
        finally:
            for h in handlers:
                h.removeFilter(flt)


class RedactedError(RuntimeError):
    """An error whose message had the API key in it, redacted (its traceback is not kept: it may hold the key)."""


class _Filter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:  # a traceback's text may quote the key: keep its lines, redacted
            text += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = self.redactor.text(text), None
        return True
