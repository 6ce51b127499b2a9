"""`sftdata --help` lists every command without importing any of the lazily loaded ones."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from sftdata.cli import LazyGroup, main


@pytest.mark.parametrize("name", sorted(LazyGroup.LAZY))
def test_the_listed_paragraph_is_the_commands_own(name):
    module, attr, paragraph = LazyGroup.LAZY[name]
    command = getattr(importlib.import_module(module), attr)
    assert " ".join(paragraph.split()) == " ".join(command.help.split("\n\n")[0].split())


def test_help_lists_what_the_loaded_commands_say_and_imports_none_of_them():
    code = ("import sys, json\nfrom sftdata.cli import main\ntry:\n    main(['--help'], prog_name='sftdata', terminal_width=100)\n"
            "except SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'pyarrow', 'sftdata'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    listing, modules = proc.stdout.rsplit("\n", 2)[0], json.loads(proc.stdout.rsplit("\n", 2)[1])
    assert not [m for m in modules if m.startswith(("numpy", "pyarrow", "sftdata.audit", "sftdata.training"))]
    ctx_commands = main.list_commands(None)
    for name in ctx_commands:  # every command loaded: click's own listing
        main.get_command(None, name)
    loaded = CliRunner().invoke(main, ["--help"], prog_name="sftdata", terminal_width=100).output
    assert listing.strip() == loaded.strip()
    assert all(f"  {name} " in listing for name in ctx_commands)
