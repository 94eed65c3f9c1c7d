"""SQLAlchemy Core statements compiled once for asyncpg: positional $n parameters, prepared and cached."""

from sqlalchemy import ColumnElement, String, func, literal
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

_DIALECT = asyncpg_dialect()


class Query:
    """A statement compiled at import; executing it only maps named parameters to positions."""

    def __init__(self, statement):
        """Compile `statement` once for asyncpg, keeping its parameter order and defaults."""
        compiled = statement.compile(dialect=_DIALECT)
        self.sql = compiled.string
        self._names = compiled.positiontup or []
        self._defaults = compiled.params  # values of the literal binds (keys, constants, limits)

    def args(self, params: dict) -> list:
        """The positional arguments for named `params`."""
        return [params[name] if name in params else self._defaults[name] for name in self._names]

    async def fetchval(self, conn, **params):
        """Run and return the first column of the first row."""
        return await conn.fetchval(self.sql, *self.args(params))

    async def fetchrow(self, conn, **params):
        """Run and return the first row."""
        return await conn.fetchrow(self.sql, *self.args(params))

    async def fetch(self, conn, **params) -> list:
        """Run and return every row."""
        return await conn.fetch(self.sql, *self.args(params))


def one_of(column, values) -> ColumnElement[bool]:
    """`column = ANY(array)`: unlike IN (...), it compiles to one parameter, so Query can prepare it."""
    return column == func.any(literal(list(values), ARRAY(String)))
