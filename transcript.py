"""The text a command prints, kept for its caller and passed on part by part as it is ready.

Command bodies (`lsm.infer.run`, `lsm.narrate.run`, ...) return their results with the text
`lsm` prints; long ones take `echo` (the command line passes `print`) so that progress shows
while they run rather than all at the end.
"""
from __future__ import annotations

from typing import Callable

Echo = Callable[[str], None] | None


class Transcript:
    def __init__(self, echo: Echo = None):
        self.parts: list[str] = []
        self.echo = echo

    def __call__(self, text: str) -> None:
        self.parts.append(text)
        if self.echo is not None:
            self.echo(text)

    def __str__(self) -> str:
        return "\n".join(self.parts)
