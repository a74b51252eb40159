"""The ``difforge`` command line: parse options into config objects and call the API.

One module per command group: ``compile`` (export, build, compile), ``run``, ``evaluate``
(eval), ``info``, ``profile``, ``bench``, ``bench-caching``. Commands import their heavy
modules when they run, so ``difforge --help`` and ``difforge run`` stay light.

User errors (:class:`DifforgeError`) print one line and exit 2; ``--debug`` shows their
traceback; click's usage errors are one line too. Anything else is a bug and keeps its
traceback. SIGTERM is turned into an exception so that a killed build removes its staging
folder like an interrupted one. SIGINT (Ctrl-C) does the same, unless difforge was started
with SIGINT ignored (a background job, ``nohup``): then it stays ignored, as its parent asked.
"""

from __future__ import annotations

import signal
import sys
from typing import Any, NoReturn

import click

from difforge._version import __version__
from difforge.cli._common import EXIT_USER_ERROR, fail
from difforge.cli.bench import bench_command
from difforge.cli.bench_caching import bench_caching_command
from difforge.cli.compile import build, calibrate, compile_, export
from difforge.cli.doctor import cache_group, doctor_command
from difforge.cli.evaluate import evaluate
from difforge.cli.export_triton import export_triton_command
from difforge.cli.info import info
from difforge.cli.profile import profile_command
from difforge.cli.run import run
from difforge.cli.serve import serve_command
from difforge.errors import DifforgeError

__all__ = ["EXIT_USER_ERROR", "cli", "main"]


def _on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)


class DifforgeGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv[1:]
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return super().invoke(ctx)
        except DifforgeError as exc:
            if debug:
                raise
            fail(str(exc))
        except ImportError as exc:
            from difforge._deps import missing_extra_message

            message = missing_extra_message(ctx.invoked_subcommand, exc)
            if message is None or debug:
                raise
            fail(message)
        except KeyboardInterrupt:
            click.echo("difforge: interrupted", err=True)
            sys.exit(130)


@click.group(cls=DifforgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="difforge")
@click.option("--debug", is_flag=True, help="Show tracebacks for user errors too.")
def cli(debug: bool) -> None:
    """difforge: compile patched diffusion models into deployable artifacts and run them."""


_COMMANDS = [export, calibrate, build, compile_, run, evaluate, info, profile_command,
             export_triton_command]
_MORE = [bench_command, bench_caching_command, doctor_command, cache_group, serve_command]
for _command in [*_COMMANDS, *_MORE]:
    cli.add_command(_command)


_NO_ARGS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main() -> None:
    """The console entry point: click's own usage errors (an unknown option, a value of the
    wrong type) are one line and exit 2, like every other user error."""
    try:
        cli.main(prog_name="difforge", standalone_mode=False)
    except click.exceptions.Exit as done:  # --help, --version
        sys.exit(done.exit_code)
    except _NO_ARGS_HELP as exc:  # plain `difforge`: the help (click >= 8.2 raises it)
        click.echo(exc.format_message())
        sys.exit(0)
    except click.ClickException as exc:
        fail(" ".join(exc.format_message().split()))
    except click.Abort:
        click.echo("difforge: interrupted", err=True)
        sys.exit(130)
