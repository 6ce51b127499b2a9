"""How every command ends on an error: ``SftdataCommand``, the one place where errors become exit codes.

The policy is ``sftdata.errors.exit_status`` (the ``SftdataError`` family by its ``exit_code``,
``OSError`` by one rule for every command, Ctrl-C and SIGTERM 130, one line each); this module
applies it to a click command, so a command body raises library errors and never catches them
to pick an exit code. Anything the policy does not know is a bug and keeps its traceback.
Every command of ``sftdata`` is a ``SftdataCommand`` (``cls=SftdataCommand``, or
``SftdataGroup.command``); ``tests/cli/test_cli_errors.py`` checks that none is left out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from sftdata.interrupts import interrupts_as_keyboard


class SftdataCommand(click.Command):
    """A command run under the one error policy, with SIGTERM as Ctrl-C (also when invoked alone)."""

    def invoke(self, ctx: click.Context) -> object:
        with _expected_errors(), interrupts_as_keyboard():
            return super().invoke(ctx)


class SftdataGroup(click.Group):
    """``sftdata``: its ``command()`` decorator makes ``SftdataCommand`` objects."""

    command_class = SftdataCommand


@contextlib.contextmanager
def _expected_errors() -> Iterator[None]:
    """An expected error -> ``click.ClickException`` with its exit code and one line; click's own
    exceptions, ``SystemExit`` and bugs (anything ``exit_status`` does not know) pass through."""
    from sftdata.errors import exit_status

    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except (Exception, KeyboardInterrupt) as exc:
        status = exit_status(exc)
        if status is None:
            raise
        err = click.ClickException(status[1])
        err.exit_code = status[0]
        raise err from None
