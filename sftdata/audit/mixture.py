"""A split run's mixture in the audit report: per source, the rows, tokens and trained tokens of
each split, read from the manifest's ``mix`` key (what ``sftdata run RECIPE.yaml`` recorded).

Why report data and no rule: the figures say what the recipe delivered, not whether a row is
right, so they are shown (terminal table, ``--json``, an HTML chart) and never change a verdict.
"""

from __future__ import annotations

from html import escape
from typing import Any

_FIGURES = ("rows", "tokens", "trained_tokens")
_SPLIT_COLORS = ("#0969da", "#bf8700", "#8250df", "#1a7f37")


def mixture_of(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """``{"split", "seed", "sources": {name: {"splits": {split: {rows, tokens, trained_tokens}},
    rows, tokens, trained_tokens, ...}}}`` from the manifest's ``mix`` key (its recipe left out: it
    repeats the inputs); None for a folder that is not part of a mix or whose ``mix`` is malformed."""
    mix = manifest.get("mix")
    if not isinstance(mix, dict) or not isinstance(mix.get("sources"), dict):
        return None
    sources = {}
    for name, entry in mix["sources"].items():
        splits = entry.get("splits") if isinstance(entry, dict) else None
        if not isinstance(splits, dict) or not all(isinstance(f, dict) for f in splits.values()):
            return None
        sources[str(name)] = dict(entry)
    return {"split": mix.get("split"), "seed": mix.get("seed"), "sources": sources}


def split_names(mixture: dict[str, Any]) -> list[str]:
    """The splits the sources name, in first-seen order (train before eval)."""
    names: list[str] = []
    for entry in mixture["sources"].values():
        names += [s for s in entry["splits"] if s not in names]
    return names


def mixture_rows(mixture: dict[str, Any]) -> list[tuple[str, ...]]:
    """The terminal table's rows: source, split, rows, tokens, trained tokens, share of the split's tokens."""
    splits = split_names(mixture)
    totals = {s: sum(int(e["splits"].get(s, {}).get("tokens", 0)) for e in mixture["sources"].values())
              for s in splits}
    out = []
    for name, entry in mixture["sources"].items():
        for split in splits:
            fig = entry["splits"].get(split, {})
            share = int(fig.get("tokens", 0)) / totals[split] if totals[split] else 0.0
            out.append((name, split, *(f"{int(fig.get(k, 0)):,}" for k in _FIGURES), f"{share:.1%}"))
    return out


def mixture_chart(mixture: dict[str, Any], figure: str, *, width: int = 520) -> str:
    """One horizontal bar per source, its segments the splits (stacked), as inline SVG; each bar is
    a ``<g class="mix-bar" data-source=...>`` and each segment's title gives split and value."""
    splits = split_names(mixture)
    sources = mixture["sources"]
    values = {n: [float(e["splits"].get(s, {}).get(figure, 0)) for s in splits] for n, e in sources.items()}
    top = max((sum(v) for v in values.values()), default=0.0) or 1.0
    left = min(220, 12 + 7 * max((len(n) for n in sources), default=4))
    row, head = 20, 44
    height = head + row * len(sources) + 6
    plot_w = width - left - 70
    title = f"mixture: {figure.replace('_', ' ')} per source and split"
    out = [f'<svg id="mixture-{figure}" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="4" y="14" font-weight="600">{escape(title)}</text>']
    for i, split in enumerate(splits):  # the legend
        color = _SPLIT_COLORS[i % len(_SPLIT_COLORS)]
        out.append(f'<rect x="{left + 70 * i}" y="22" width="10" height="10" fill="{color}"/>'
                   f'<text x="{left + 70 * i + 14}" y="31">{escape(split)}</text>')
    for j, (name, vals) in enumerate(values.items()):
        y = head + j * row
        out.append(f'<g class="mix-bar" data-source="{escape(name)}">'
                   f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(name)}</text>')
        x = float(left)
        for i, (split, value) in enumerate(zip(splits, vals, strict=True)):
            w = plot_w * value / top
            out.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" '
                       f'fill="{_SPLIT_COLORS[i % len(_SPLIT_COLORS)]}" data-split="{escape(split)}">'
                       f"<title>{escape(name)} {escape(split)}: {value:,.0f}</title></rect>")
            x += w
        out.append(f'<text x="{x + 4:.1f}" y="{y + 13}">{sum(vals):,.0f}</text></g>')
    out.append("</svg>")
    return "".join(out)
