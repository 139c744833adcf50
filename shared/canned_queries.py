"""Canned analyses: versioned `.sql` files in `shared/queries/`, run by `recsys sql --query`.

Each file starts with a header of `--` comments:

    -- name: top_titles
    -- version: 1
    -- description: most interacted titles in a period
    -- param: start | required | first day (YYYY-MM-DD), inclusive
    -- param: limit | 10 | rows to return

A body line `--@include NAME` is replaced by `shared/queries/fragments/NAME.sql` (a block
several queries share, e.g. the outcome rates); `CannedQuery.sql` is the expanded text.

A param's middle field is its default: `required`, `null` (the query handles NULL, e.g. "the
data's max date"), or a literal. Values reach DuckDB as prepared parameters (`$start`), never
by string formatting, and the SQL casts them (`CAST($start AS DATE)`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from shared.errors import RecsysError, UsageError

REQUIRED = "required"


@dataclass(frozen=True)
class Param:
    name: str
    default: str | None  # None: passes NULL
    required: bool
    description: str


@dataclass(frozen=True)
class CannedQuery:
    name: str
    version: int
    description: str
    params: tuple[Param, ...]
    sql: str

    def bind(self, given: dict[str, str]) -> dict[str, str | None]:
        """Prepared-statement values: exactly the declared params (DuckDB refuses extras)."""
        known = {p.name for p in self.params}
        unknown = sorted(set(given) - known)
        if unknown:
            raise UsageError(
                f"query {self.name}: unknown param(s) {unknown}; it takes {sorted(known)}"
            )
        values: dict[str, str | None] = {}
        for p in self.params:
            if p.name in given:
                values[p.name] = given[p.name]
            elif p.required:
                raise UsageError(f"query {self.name}: param {p.name!r} is required")
            else:
                values[p.name] = p.default
        return values


_INCLUDE = re.compile(r"^\s*--@include\s+(\w+)\s*$", re.MULTILINE)


def _expand(text: str) -> str:
    def fragment(match: re.Match[str]) -> str:
        entry = resources.files("shared.queries.fragments") / f"{match.group(1)}.sql"
        if not entry.is_file():
            raise RecsysError(f"--@include {match.group(1)}: no shared/queries/fragments/"
                              f"{match.group(1)}.sql")  # fmt: skip
        return entry.read_text().rstrip("\n")

    return _INCLUDE.sub(fragment, text)


def parse(text: str) -> CannedQuery:
    header: dict[str, str] = {}
    params: list[Param] = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        key, _, value = line[2:].strip().partition(":")
        key, value = key.strip(), value.strip()
        if key == "param":
            parts = [p.strip() for p in value.split("|")]
            if len(parts) != 3:
                raise RecsysError(f"bad param header {line!r}: want 'name | default | text'")
            name, default, description = parts
            params.append(Param(
                name=name,
                default=None if default in (REQUIRED, "null") else default,
                required=default == REQUIRED,
                description=description,
            ))  # fmt: skip
        elif key:
            header[key] = value
    missing = {"name", "version", "description"} - set(header)
    if missing:
        raise RecsysError(f"canned query header lacks {sorted(missing)}")
    return CannedQuery(
        name=header["name"],
        version=int(header["version"]),
        description=header["description"],
        params=tuple(params),
        sql=_expand(text),
    )


def load_all() -> dict[str, CannedQuery]:
    out: dict[str, CannedQuery] = {}
    for entry in resources.files("shared.queries").iterdir():
        if entry.name.endswith(".sql"):
            query = parse(entry.read_text())
            if query.name != entry.name.removesuffix(".sql"):
                raise RecsysError(f"{entry.name}: header name is {query.name!r}")
            out[query.name] = query
    return dict(sorted(out.items()))


def get(name: str) -> CannedQuery:
    queries = load_all()
    if name not in queries:
        raise UsageError(f"no canned query {name!r}; available: {', '.join(queries)}")
    return queries[name]
