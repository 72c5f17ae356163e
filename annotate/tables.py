"""One page of a big admin table: filtered, sorted and paginated from the query string.

The admin pages at crowd size hold thousands of rows; a page shows ``per`` of them. The query
string names the page (``page``), the sort column (``sort``, from the table's own list),
``order`` (``asc``/``desc``), equality filters on the table's filter columns, and ``q``, a
substring of the participant id. A value out of range is a 400, never a traceback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from werkzeug.datastructures import MultiDict

PER_PAGE = 50
MAX_PER_PAGE = 500


class BadQuery(ValueError):
    """A query-string value the table cannot use (the message says which)."""


@dataclass
class TablePage:
    """The rows of one page and what the links to the others need."""

    rows: list[dict]
    matching: int  # rows that pass the filters
    total: int  # rows before filtering
    page: int
    pages: int
    per: int
    sort: str
    order: str
    filters: dict[str, str]  # the active filters, q included

    def link(self, **changes) -> dict[str, str | int]:
        """The query of this page with ``changes`` (for url_for)."""
        query = {"page": self.page, "per": self.per, "sort": self.sort, "order": self.order}
        query.update(self.filters)
        query.update(changes)
        return {k: v for k, v in query.items() if v not in ("", None)}


def table_page(
    frame: pd.DataFrame,
    args: MultiDict,
    sortable: tuple[str, ...],
    filters: dict[str, tuple[str, ...]] | None = None,
    search: str | None = "participant",
    default_sort: str | None = None,
    default_order: str = "asc",
) -> TablePage:
    """Filter ``frame`` by ``args`` (columns in ``filters`` by equality with one of the values
    listed there, ``q`` as a substring of ``search``), sort it by ``args['sort']`` (one of
    ``sortable``) and cut out the page."""
    per = _integer(args, "per", PER_PAGE, 1, MAX_PER_PAGE)
    sort = args.get("sort") or default_sort or sortable[0]
    if sort not in sortable:
        raise BadQuery(f"cannot sort by {sort!r} (choose one of {', '.join(sortable)})")
    order = args.get("order") or default_order
    if order not in ("asc", "desc"):
        raise BadQuery("order must be asc or desc")
    active = {name: args[name] for name in filters or {} if args.get(name)}
    for name, value in active.items():
        if value not in filters[name]:
            raise BadQuery(f"no {name} {value[:40]!r} (choose one of {', '.join(filters[name])})")
    kept = frame
    for name, value in active.items():
        kept = kept[kept[name].astype(str) == value]
    query = (args.get("q") or "").strip()[:100]
    if query and search is not None:
        kept = kept[kept[search].astype(str).str.contains(query, case=False, regex=False)]
        active["q"] = query
    pages = max(1, math.ceil(len(kept) / per))
    page = min(_integer(args, "page", 1, 1, 10**9), pages)
    ordered = kept.sort_values(sort, ascending=order == "asc", kind="stable", na_position="last")
    rows = ordered.iloc[(page - 1) * per : page * per].to_dict("records")
    return TablePage(rows, len(kept), len(frame), page, pages, per, sort, order, active)


def _integer(args: MultiDict, name: str, default: int, low: int, high: int) -> int:
    text = args.get(name)
    if text in (None, ""):
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadQuery(f"{name} must be a whole number, not {text[:20]!r}") from None
    if not low <= value <= high:
        raise BadQuery(f"{name} must lie within {low}–{high}")
    return value
