"""`gannet doctor --home DIR`: check a node home, one line per check."""

from __future__ import annotations

from pathlib import Path

import click

from node.doctor import FAIL, run_doctor


@click.command("doctor")
@click.option("--home", required=True, type=click.Path(file_okay=False, path_type=Path))
def doctor(home: Path) -> None:
    """Check config, genesis, store, keys, WAL and sign state; exit 1 if any check FAILs."""
    checks = run_doctor(home)
    for check in checks:
        click.echo(check.line())
    if any(check.status == FAIL for check in checks):
        raise SystemExit(1)
