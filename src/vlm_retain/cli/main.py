"""Entry point: ``vlm-retain`` and ``python -m vlm_retain``.

Errors raised by the library (:class:`~vlm_retain.errors.VlmRetainError`) become one line on
stderr and the documented exit code (0 ok, 1 problems found, 2 usage or input error) instead of
a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click
import typer

from vlm_retain import __version__
from vlm_retain.cli import bench as bench_cli
from vlm_retain.cli import data as data_cli
from vlm_retain.cli import demo as demo_cli
from vlm_retain.cli import eval as eval_cli
from vlm_retain.cli import merge as merge_cli
from vlm_retain.cli import model as model_cli
from vlm_retain.cli import report as report_cli
from vlm_retain.cli import score as score_cli
from vlm_retain.cli import sweep as sweep_cli
from vlm_retain.cli import train as train_cli
from vlm_retain.cli import transcribe as transcribe_cli
from vlm_retain.errors import EXIT_USAGE, VlmRetainError
from vlm_retain.quiet import silence_known_warnings

app = typer.Typer(
    name="vlm-retain",
    help="Teach vision-language models to read historical handwriting without forgetting.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_cli.app, name="data")
app.add_typer(score_cli.app, name="score")
app.add_typer(model_cli.app, name="model")
app.add_typer(eval_cli.app, name="eval")
app.add_typer(merge_cli.app, name="merge")
app.add_typer(sweep_cli.app, name="sweep")
app.add_typer(demo_cli.app, name="demo")
app.add_typer(bench_cli.app, name="bench")
app.command("transcribe")(transcribe_cli.transcribe)
app.command("report")(report_cli.report)
app.command("train")(train_cli.train)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vlm-retain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Offline by design: nothing is downloaded or uploaded (HF_HUB_OFFLINE is set)."""


def _click_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """Usage-error and abort classes of click and of typer's vendored copy (typer >= 0.22)."""
    usage: list[type[BaseException]] = [click.ClickException]
    abort: list[type[BaseException]] = [click.exceptions.Abort, typer.Abort]
    try:
        from typer._click import exceptions as vendored
    except ImportError:  # older typer uses click itself
        pass
    else:
        usage.append(vendored.ClickException)
    return tuple(usage), tuple(abort)


_USAGE_ERRORS, _ABORTS = _click_errors()


def _usage_message(exc: BaseException) -> str:
    """Click's usage error as one line, pointing at the right ``--help``."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "vlm-retain"
    return f"{' '.join(message.split())} (see '{command} --help')"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI; exit with the documented codes."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # our own progress bars and summaries say enough; hub/transformers bars would interleave
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    silence_known_warnings()
    command = typer.main.get_command(app)
    try:
        code = command.main(
            args=list(argv) if argv is not None else None,
            prog_name="vlm-retain",
            standalone_mode=False,
        )
    except VlmRetainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except _USAGE_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
            exc.show()  # type: ignore[attr-defined]
        else:
            print(f"error: {_usage_message(exc)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except _ABORTS:
        print("aborted", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except OSError as exc:  # a path we could not read or write: name it, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    sys.exit(code if isinstance(code, int) else 0)
