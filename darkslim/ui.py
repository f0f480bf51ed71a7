"""Terminal output shared by the commands (library code never prints)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape


def make_console(stderr: bool = False) -> Console:
    """A console at least 120 columns wide, so tables don't wrap when piped."""
    return Console(stderr=stderr, width=max(Console(stderr=stderr).width, 120))


def warn(console: Console, message: str) -> None:
    """A yellow warning; the text is escaped (messages quote cfg sections like
    ``[maxpool]``, which rich would otherwise take as markup)."""
    # soft_wrap: a long path stays one unbroken token the user can copy.
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def error(console: Console, message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def load_for_running(console: Console, graph: Any, weights: str, bn_eps: float | None,
                     **options: Any) -> tuple[Any, float]:
    """The weights of a command that runs the network, its load warnings shown, and the
    BatchNorm eps to run them with: the torch frontend folds the checkpoint's eps into the
    running variances, so those run with the runtime's eps; other formats with --bn-eps."""
    import frontends

    loaded = frontends.load_variables(graph, weights, bn_eps=bn_eps, **options)
    for warning in loaded.warnings:
        warn(console, warning)
    eps = frontends.RUNTIME_BN_EPS if bn_eps is None or loaded.format == "torch" else bn_eps
    return loaded, eps
