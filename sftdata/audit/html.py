"""The audit as one self-contained HTML page: inline CSS, inline SVG charts, no scripts, no network.

Why self-contained: the page is a CI artifact, opened from a zip on a laptop or served from an
air-gapped cluster; it must render with nothing else present and must never fetch anything.
Every piece of text from the data (ids, decoded tokens, messages) is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from sftdata.audit.report import ALL_RULES, AuditReport, violation_line

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1100px;color:#1b1f24}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
.ok{color:#1a7f37}.fail{color:#cf222e}.skip{color:#6e7781}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eaeef2;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:18px}.chart{border:1px solid #d0d7de;border-radius:6px;padding:8px}
svg text{font:11px system-ui,sans-serif;fill:#444}
.sample{border:1px solid #d0d7de;border-radius:6px;padding:8px;margin:10px 0}
.toks{font:12px/1.9 ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap;word-break:break-all}
.toks span{padding:1px 0;border-right:1px solid #fff}.t0{background:#eef1f4}.t1{background:#dde3ea}
.tr.t0{background:#a6e3b0}.tr.t1{background:#7fd28f}.sp{color:#8250df;font-weight:600}
.legend span{padding:1px 6px;margin-right:8px}
code{font:12px ui-monospace,monospace}
"""


def _bars(title: str, labels: list[str], values: list[float], *, svg_id: str, color: str,
          axis: tuple[str, str], width: int = 520, height: int = 200) -> str:
    """A histogram as inline SVG: contiguous bins, so only the axis ends are labelled."""
    n = max(len(values), 1)
    top = max(values) if values and max(values) > 0 else 1
    left, bottom, plot_h = 44, 38, height - 60
    bw = (width - left - 10) / n
    out = [f'<svg id="{svg_id}" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{left}" y="14" font-weight="600">{escape(title)}</text>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#888"/>',
           f'<text x="{left - 4}" y="{height - bottom - plot_h + 4}" text-anchor="end">{top:,.0f}</text>',
           f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">0</text>']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * (value / top)
        out.append(f'<rect class="bar" x="{left + i * bw + 1:.1f}" y="{height - bottom - h:.1f}" '
                   f'width="{max(bw - 2, 1):.1f}" height="{h:.1f}" fill="{color}">'
                   f"<title>{escape(label)}: {value:,.0f}</title></rect>")
    y = height - bottom + 14
    out.append(f'<text x="{left}" y="{y}" text-anchor="start">{escape(axis[0])}</text>'
               f'<text x="{width - 10}" y="{y}" text-anchor="end">{escape(axis[1])}</text></svg>')
    return "".join(out)


def _hbars(title: str, counts: dict[str, float], *, svg_id: str, color: str, width: int = 520) -> str:
    """Named categories as horizontal bars, largest first: one line per name, so names of any
    length and any number of them stay readable (a row of labels under vertical bars overlaps)."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) or [("none", 0.0)]
    top = max(v for _, v in items) or 1
    left = min(220, 12 + 7 * max(len(k) for k, _ in items))  # ~7 px per character at 11 px
    row, head = 20, 26
    height = head + row * len(items) + 6
    plot_w = width - left - 70
    out = [f'<svg id="{svg_id}" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="4" y="14" font-weight="600">{escape(title)}</text>']
    for i, (label, value) in enumerate(items):
        y = head + i * row
        w = plot_w * value / top
        out.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(label)}</text>'
                   f'<rect class="bar" x="{left}" y="{y + 2}" width="{max(w, 0.5):.1f}" height="{row - 6}" '
                   f'fill="{color}"><title>{escape(label)}: {value:,.0f}</title></rect>'
                   f'<text x="{left + w + 4:.1f}" y="{y + 13}">{value:,.0f}</text>')
    out.append("</svg>")
    return "".join(out)


def histogram(title: str, hist: dict[str, list], svg_id: str, color: str, pct: bool = False) -> str:
    edges, counts = hist["edges"], hist["counts"]
    show = (lambda e: f"{e:.0%}") if pct else (lambda e: f"{e:,.0f}")
    labels = [f"{show(lo)}–{show(hi)}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return _bars(title, labels, [float(c) for c in counts], svg_id=svg_id, color=color,
                 axis=(show(edges[0]), show(edges[-1])))


def _sample(report: AuditReport, sample: dict[str, Any], tokenizer: Any) -> str:
    from sftdata.audit.inspect import find_row, token_pieces

    try:
        if report.row_reader is not None:  # data without a manifest
            row = report.row_reader(sample["shard"], sample["row"])
        else:
            row = find_row(report.location or report.path, shard=sample["shard"], row=sample["row"])
    except Exception as exc:  # a shard that cannot be read is already a violation
        return f'<div class="sample"><b>{escape(sample["shard"])} row {sample["row"]}</b>: {escape(str(exc))}</div>'
    limit = 1500
    pieces = token_pieces(tokenizer, row.input_ids[:limit])
    spans = []
    for i, piece in enumerate(pieces):
        trained = i < len(row.labels) and row.labels[i] != -100
        special = int(row.input_ids[i]) in tokenizer.special_ids
        cls = f"t{i % 2}" + (" tr" if trained else "") + (" sp" if special else "")
        shown = escape(piece.replace("\n", "\\n")) + ("\n" if "\n" in piece or int(row.input_ids[i]) == tokenizer.eot_id else "")
        spans.append(f'<span class="{cls}" title="{int(row.input_ids[i])}">{shown}</span>')
    more = f"\n… {len(row.input_ids) - limit:,} more tokens" if len(row.input_ids) > limit else ""
    return (f'<div class="sample" data-id="{escape(str(row.id))}"><div><b>id</b> <code>{escape(str(row.id))}</code> '
            f"· {escape(row.shard)} row {row.row} · {len(row.input_ids):,} tokens · {row.trained:,} trained"
            f" · shown because: {escape(sample.get('why', ''))}</div>"
            f'<div class="toks">{"".join(spans)}{escape(more)}</div></div>')


def _plan_chart(report: AuditReport) -> str | None:
    """Padding waste per micro-batch size, from ``sftdata plan``'s figures (prepared local folders only:
    the plan needs the manifest's row lengths)."""
    if report.input or "://" in (report.location or report.path):
        return None
    try:
        from sftdata.planning.plan import plan_figures

        figures = plan_figures(report.location or report.path)
    except Exception:  # noqa: BLE001 - the chart is an extra; the audit verdict does not depend on it
        return None
    waste = {f"{'rows' if f['unit'] == 'rows' else 'tokens'} {f['size']:,}": 100.0 * f["padding_waste"]
             for f in figures["sizes"]}
    return _hbars("padding waste % per micro-batch (sftdata plan)", waste, svg_id="plan-padding", color="#bf8700")


def render_html(report: AuditReport, tokenizer: Any | None = None) -> str:
    """The whole page as a string."""
    if tokenizer is None:
        from sftdata.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(report.tokenizer["spec"])
    s = report.stats
    verdict = ('<span class="ok">OK: every rule holds</span>' if report.ok else
               f'<span class="fail">FAILED: {escape(", ".join(report.failed_rules()))}</span>')
    overview = [("rows", f"{s['rows']:,}"), ("conversations", f"{s['conversations']:,}"),
                ("tokens", f"{s['tokens']:,}"), ("trained tokens", f"{s['trained_tokens']:,} ({s['trained_fraction']:.1%})"),
                ("truncated rows", f"{s['truncated_rows']:,}")]
    if report.input:  # no manifest: what was read, and no record counts
        overview.insert(0, ("read as", escape(report.input["description"])))
    else:
        overview.append(("records rejected", f"{s['records']['rejected_total']:,} of {s['records']['records_read']:,}"))
    if s.get("packed") and s.get("packing_efficiency") is not None:
        overview.append(("packing efficiency", f"{s['packing_efficiency']:.1%}"))
    rules = "".join(f'<tr><td><code>{r}</code></td><td class="{"ok" if st == "pass" else st}">{escape(report.status_text(r))}</td>'
                    f'<td class="n">{report.violation_counts.get(r, 0):,}</td><td>{escape(ALL_RULES[r])}</td></tr>'
                    for r, st in report.statuses.items())
    roles = [r for r, n in s["tokens_per_role"].items() if n]
    rejected = s["records"]["rejected"]
    charts = [
        histogram("row length (tokens)", s["length_histogram"], "length-histogram", "#0969da"),
        histogram("trained fraction per row", s["trained_fraction_histogram"], "trained-histogram", "#1a7f37", True),
        _hbars("tokens per role", {r: float(s["tokens_per_role"][r]) for r in roles}, svg_id="role-tokens",
               color="#8250df"),
        _hbars("rejected records by reason", {k: float(v) for k, v in rejected.items()}, svg_id="rejections",
               color="#cf222e"),
    ]
    if report.mixture is not None:
        from sftdata.audit.mixture import mixture_chart

        charts += [mixture_chart(report.mixture, "rows"), mixture_chart(report.mixture, "tokens")]
    plan = _plan_chart(report)
    if plan is not None:
        charts.append(plan)
    listed = "".join(f"<li><code>{escape(violation_line(v))}</code></li>" for v in report.violations[:200])
    rest = sum(report.violation_counts.values()) - min(200, len(report.violations))
    samples = "".join(_sample(report, smp, tokenizer) for smp in report.samples)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sftdata audit: {escape(report.path)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body><h1>sftdata audit</h1><div><code>{escape(report.path)}</code> · tokenizer <code>{escape(str(report.tokenizer.get('spec')))}</code></div>
<h2>Verdict</h2><p id="verdict">{verdict}</p>
<table id="overview">{"".join(f'<tr><td>{k}</td><td class="n">{v}</td></tr>' for k, v in overview)}</table>
<h2>Rules</h2><table id="rules"><tr><th>rule</th><th>status</th><th>violations</th><th>what it checks</th></tr>{rules}</table>
<h2>Charts</h2><div class="charts">{"".join(f'<div class="chart">{c}</div>' for c in charts)}</div>
<h2>Violations</h2><ul id="violations">{listed or "<li>none</li>"}</ul>{f"<p>… and {rest:,} more</p>" if rest > 0 else ""}
<h2>Sample rows</h2><p class="legend"><span class="t0">token</span><span class="t1">token</span>
<span class="tr t0">trained token</span> alternating shades mark token boundaries; hover a token for its id.</p>
<div id="samples">{samples}</div>
</body></html>
"""
