"""Small pieces the report modules share (table.py, aggregate.py): the metric per suite, the order of
published columns, markdown tables."""
from __future__ import annotations


def resolve_metric(metric: str, suite: str) -> str:
    """--metric auto: success for Meta-World (its benchmark score), return elsewhere."""
    if metric == "auto":
        return "success" if suite == "metaworld" else "return"
    return metric


def ordered_columns(cols) -> list[str]:
    """Published columns at our budget (150k) first, GSA first among them."""
    return sorted(cols, key=lambda c: (not c.endswith("@150k"), not c.startswith("GSA")))


def markdown(head: list, body: list[list]) -> list[str]:
    """An aligned markdown table: header, rule and one line per body row."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(b) for b in body]
