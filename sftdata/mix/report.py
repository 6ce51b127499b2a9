"""The mix's lines of the run summary: per source and split, what was read, dropped and delivered."""

from __future__ import annotations


def mix_lines(mix: dict) -> list[str]:
    """One block per source: read, rejected, duplicates, sampling factor, budget, rows/tokens per split."""
    lines = [f"mix (seed {mix['seed']}): {len(mix['sources'])} source(s)"]
    for name, s in mix["sources"].items():
        rejected = sum(s["rejected"].values())
        lines.append(f"  {name}: read {s['records_read']:,}, rejected {rejected:,} (duplicates "
                     f"{s['duplicates_removed']:,}), not taken {s['records_not_taken']:,}, sampling factor "
                     f"{s['sampling_factor']}")
        asked, got = s["budget"]["asked"], s["budget"]["delivered"]
        lines.append(f"    budget asked {_pair(asked)}, delivered {_pair(got)}")
        for split, v in s["splits"].items():
            lines.append(f"    {split:<6} rows {v['rows']:>10,}  tokens {v['tokens']:>12,}  trained "
                         f"{v['trained_tokens']:>12,}")
    return lines


def _pair(d: dict) -> str:
    return ", ".join(f"{k} {v:,}" if isinstance(v, (int, float)) and not isinstance(v, bool) else k
                     for k, v in d.items())
