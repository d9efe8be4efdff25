"""Django's PostgreSQL DatabaseWrapper with two additions, and nothing else changed:

- every new connection asks the alias's circuit first (`backend.sharding.circuit`): while it
  is open the attempt fails at once, as the driver's OperationalError, instead of costing a
  connect (and DB_CONNECT_TIMEOUT when the host does not answer);
- every database error raised through Django carries `database_alias`, so the one exception
  handler can say which shard was unreachable even outside `on_shard`; an unreachable error
  on a live connection (the server went away) opens the circuit too.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base
from django.db.utils import DatabaseError, DatabaseErrorWrapper
from django.utils.functional import cached_property

from backend.common.dberrors import classify
from backend.sharding.circuit import CircuitOpen, circuits


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class _TaggingErrorWrapper(DatabaseErrorWrapper):
    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        try:
            super().__exit__(exc_type, exc_value, traceback)
        except DatabaseError as exc:
            alias = self.wrapper.alias
            exc.database_alias = alias  # type: ignore[attr-defined]
            # a live connection that broke (the server went away); failed connects are
            # recorded by get_new_connection, and the fast failures must not extend the wait
            if self.wrapper.connection is not None and classify(exc) == "unreachable":
                circuits.failed(alias, _first_line(exc_value))
            raise


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        try:
            circuits.before_connect(self.alias)
        except CircuitOpen as exc:
            raise self.Database.OperationalError(str(exc)) from None
        try:
            connection = super().get_new_connection(conn_params)
        except Exception as exc:
            circuits.failed(self.alias, _first_line(exc))
            raise
        circuits.succeeded(self.alias)
        return connection

    @cached_property
    def wrap_database_errors(self) -> DatabaseErrorWrapper:
        return _TaggingErrorWrapper(self)
