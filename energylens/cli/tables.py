"""Rich tables that read at 80 columns: every kept column shows its cells whole.

``fitted_table`` measures each column (header and cells), keeps the columns in order of priority while
they fit the console's width and drops the rest (saying which in the caption), so a narrow terminal gets
fewer columns instead of blank or ellipsised ones. Name columns (``fold``) wrap instead of being cut.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

BORDER = 3  # "│ " + " " per column, plus one


def fitted_table(con: Console, title: str, headers: list[str], rows: list[list[str]], *,
                 priority: list[int] | None = None, left: tuple[int, ...] = (), fold: tuple[int, ...] = (),
                 styles: list[str | None] | None = None) -> Table:
    """A table of ``rows`` (strings) with the columns that fit ``con.width``; ``priority`` lists column
    indices from most to least important (default: left to right); ``fold`` columns wrap (names)."""
    n = len(headers)
    widths = [max([len(headers[i])] + [len(r[i]) for r in rows]) for i in range(n)]
    order = priority if priority is not None else list(range(n))
    keep: list[int] = []
    used = 1
    for i in order:
        need = (min(widths[i], 12) if i in fold else widths[i]) + BORDER
        if used + need <= con.width or not keep:
            keep.append(i)
            used += need
    keep.sort()
    dropped = [headers[i] for i in range(n) if i not in keep]
    t = Table(title=title, caption=("not shown at this width: " + ", ".join(dropped)) if dropped else None)
    for i in keep:
        if i in fold:
            t.add_column(headers[i], justify="left", overflow="fold", min_width=min(widths[i], 12))
        else:
            t.add_column(headers[i], justify="left" if i in left else "right", no_wrap=True, min_width=widths[i])
    for k, r in enumerate(rows):
        t.add_row(*(r[i] for i in keep), style=styles[k] if styles else None)
    return t
