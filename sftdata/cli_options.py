"""Reading options shared by ``sftdata run`` and ``sftdata validate`` (one definition, one meaning).

Both commands must read a file the same way, or ``validate`` reports as invalid what ``run``
would write. The choices come from ``sftdata.choices`` (which imports nothing heavy), so that
``sftdata --help`` does not import the validators; ``tests/test_input_options.py`` checks that
they are exactly the registry's formats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from sftdata.choices import InputFormat, values

INPUT_FORMATS = tuple(values(InputFormat))


def parse_fields(_ctx: click.Context | None, _param: click.Parameter | None, values: tuple[str, ...]) -> dict:
    """``("output=response", "role=speaker")`` -> ``{"output": "response", "role": "speaker"}``."""
    if not values:
        return {}
    from sftdata.stages.adapt.fields import MESSAGE_LEVEL, TOP_LEVEL

    known = TOP_LEVEL | MESSAGE_LEVEL
    out: dict[str, str] = {}
    for value in values:
        name, sep, source = value.partition("=")
        name, source = name.strip(), source.strip()
        if not sep or not name or not source:
            raise click.BadParameter(f"{value!r}: expected NAME=SOURCE, e.g. output=response", param_hint="--field")
        if name not in known:
            raise click.BadParameter(f"{value!r}: {name!r} is not a field sftdata reads; one of "
                                     f"{', '.join(sorted(known))}", param_hint="--field")
        out[name] = source
    return out


def reading_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--input-format`` and ``--field`` (repeatable); the command receives ``input_format`` and ``fields``."""
    fn = click.option("--field", "fields", multiple=True, metavar="NAME=SOURCE", callback=parse_fields,
                      help="Read field NAME from SOURCE, e.g. --field output=response --field role=speaker "
                           "(the same mapping as read.fields; repeatable).")(fn)
    return click.option("--input-format", type=click.Choice(INPUT_FORMATS),
                        help="Record format of the input (auto: detected per file).")(fn)
