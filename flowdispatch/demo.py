"""The demo workflow: a small extract-transform-load pipeline, fan-out and fan-in.

Built only from the public API, as a user would write it::

    price_list ─> extract ×4 ─> clean ×4 ─┬─> summarize ×4 ─> collect ─> combine ─┬─> report
                                          └─> rejected rows ─> count_rejected ────┘

``extract`` makes each region's sales rows (deterministic and in memory: no
network, no files), ``clean`` splits them into valid and rejected rows
(``nout=2``), ``summarize`` totals each region, ``combine`` and
``count_rejected`` gather all regions (fan-in) and ``report`` puts it together.
Money is in integer cents, so the results are exact.

Run it with ``flowdispatch demo`` (or ``make demo``).

Examples
--------
>>> from flowdispatch import demo
>>> target = demo.build(regions=("north", "south"))
>>> target.name
'report'
>>> summary = target.compute(executor="sync")
>>> summary["best_region"], summary["rejected_rows"]
('south', 8)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flowdispatch as fd

__all__ = ["PRICES", "REGIONS", "build", "format_report", "main"]

#: The regions whose sales the pipeline loads.
REGIONS = ("north", "south", "east", "west")

#: Unit prices in cents.
PRICES = {"widget": 250, "gadget": 1200, "gizmo": 799}

DAYS = 5


@fd.op(retries=2, retry_on=(ConnectionError, TimeoutError), retry_delay=0.1)
def extract(region: str, prices: dict[str, int]) -> list[dict[str, Any]]:
    """Load one region's sales rows (made up, but the same every time).

    In a real pipeline this would query a database or an API, hence the
    retries on connection errors. Some rows have a non-positive unit count:
    ``clean`` rejects those.

    Examples
    --------
    >>> rows = extract.fn("north", PRICES)
    >>> len(rows), rows[0]
    (15, {'region': 'north', 'day': 1, 'product': 'widget', 'units': 3, 'price': 250})
    """
    seed = REGIONS.index(region) if region in REGIONS else len(region)
    return [
        {"region": region, "day": day, "product": product,
         "units": (3 * seed + 5 * day + 7 * j) % 11 - 2, "price": price}
        for day in range(1, DAYS + 1)
        for j, (product, price) in enumerate(prices.items())
    ]


@fd.op(nout=2, pure=True)
def clean(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split rows into ``(valid, rejected)``: a sale needs at least one unit.

    Examples
    --------
    >>> valid, rejected = clean.fn([{"units": 2}, {"units": 0}])
    >>> valid, rejected
    ([{'units': 2}], [{'units': 0}])
    """
    valid = [row for row in rows if row["units"] > 0]
    rejected = [row for row in rows if row["units"] <= 0]
    return valid, rejected


@fd.op(pure=True)
def summarize(region: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One region's totals: orders, units and revenue (cents).

    Examples
    --------
    >>> summarize.fn("north", [{"units": 2, "price": 250}, {"units": 1, "price": 799}])
    {'region': 'north', 'orders': 2, 'units': 3, 'revenue': 1299}
    """
    return {
        "region": region,
        "orders": len(rows),
        "units": sum(row["units"] for row in rows),
        "revenue": sum(row["units"] * row["price"] for row in rows),
    }


@fd.op(pure=True)
def combine(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """All regions together: per-region totals, the grand total, the best region."""
    regions = {s["region"]: {k: v for k, v in s.items() if k != "region"} for s in summaries}
    best = max(summaries, key=lambda s: (s["revenue"], s["region"]))["region"]
    return {
        "regions": regions,
        "total_revenue": sum(s["revenue"] for s in summaries),
        "total_units": sum(s["units"] for s in summaries),
        "best_region": best,
    }


@fd.op(pure=True)
def count_rejected(rejected: list[list[dict[str, Any]]]) -> int:
    """How many rows were rejected, over all regions."""
    return sum(len(rows) for rows in rejected)


@fd.op
def report(totals: dict[str, Any], rejected_rows: int) -> dict[str, Any]:
    """The pipeline's result: the combined totals plus the rejected-row count."""
    return {**totals, "rejected_rows": rejected_rows}


def build(regions: tuple[str, ...] = REGIONS) -> fd.Node[dict[str, Any]]:
    """Build the demo graph (nothing runs); return its final node.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> target = build()
    >>> len(fd.Graph(target))
    25
    """
    prices = fd.value(PRICES, name="price_list")
    raw = extract.map(regions, fd.unmapped(prices))           # fan-out: one node per region
    cleaned = [clean(rows) for rows in raw]                   # each unpacks: valid, rejected
    summaries = [summarize(region, valid) for region, (valid, _) in zip(regions, cleaned)]
    totals = combine(fd.collect(summaries, name="summaries"))  # fan-in with fd.collect
    rejected = count_rejected([bad for _, bad in cleaned])    # fan-in with a list of nodes
    return report(totals, rejected)


def _money(cents: int) -> str:
    return f"{cents / 100:,.2f}"


def format_report(summary: dict[str, Any]) -> str:
    """The demo's result as a small text table.

    Examples
    --------
    >>> print(format_report({"regions": {"north": {"orders": 2, "units": 3, "revenue": 1299}},
    ...                      "total_revenue": 1299, "total_units": 3, "best_region": "north",
    ...                      "rejected_rows": 1}))
    region    orders  units    revenue
    north          2      3      12.99
    total          2      3      12.99
    best region: north; rejected rows: 1
    """
    lines = [f"{'region':<8} {'orders':>7} {'units':>6} {'revenue':>10}"]
    orders = 0
    for region, row in summary["regions"].items():
        orders += row["orders"]
        lines.append(f"{region:<8} {row['orders']:>7} {row['units']:>6} {_money(row['revenue']):>10}")
    lines.append(f"{'total':<8} {orders:>7} {summary['total_units']:>6} "
                 f"{_money(summary['total_revenue']):>10}")
    lines.append(f"best region: {summary['best_region']}; "
                 f"rejected rows: {summary['rejected_rows']}")
    return "\n".join(lines)


def _executor_name(executor: Any) -> str:
    if executor is None:
        return f"{fd.config.get('executor')} (the default)"
    return executor if isinstance(executor, str) else type(executor).__name__


def main(executor: Any = None, out: str | Path | None = "demo.svg") -> dict[str, Any]:
    """Build the demo graph, run it, print the result and write SVGs of the graph.

    Parameters
    ----------
    executor
        Any ``executor=`` that :func:`flowdispatch.run` accepts; ``None`` is the default.
    out
        Where to write the graph as SVG (``None``: no files). The graph
        coloured by state after the run goes beside it, as ``<stem>-run.svg``.

    Returns
    -------
    dict
        The report: per-region totals, ``total_revenue`` (cents),
        ``total_units``, ``best_region`` and ``rejected_rows``.
    """
    target = build()
    graph = fd.Graph(target)
    print(f"flowdispatch demo: {len(graph)} nodes, executor {_executor_name(executor)}")
    results = fd.run(target, executor=executor)
    if results.failed:
        results[results.failed[0]]  # raises the first failure, with the node in a note
    summary = results[target]
    print(format_report(summary))
    if out is not None:
        out = Path(out)
        graph.visualize(filename=str(out))
        after = out.with_name(f"{out.stem}-run{out.suffix or '.svg'}")
        results.visualize(filename=str(after), color="state")
        print(f"wrote {out} (the graph) and {after} (after the run, coloured by state)")
    return summary
