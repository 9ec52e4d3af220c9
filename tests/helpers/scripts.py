"""Running the project's scripts in-process, as a user's command line would."""
from __future__ import annotations

from agcam.cli.common import script_entry


def run(script, argv) -> int:
    """``script`` (a module with ``get_args_parser`` and ``main``) on ``argv``: its exit code."""
    return script_entry(script.get_args_parser, script.main)([str(a) for a in argv])
