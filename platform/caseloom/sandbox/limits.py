"""The limits of one script run, and the words that name a limit when a script goes past it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Limits:
    """Per-run limits. CPU and memory are enforced in the worker with `setrlimit`; wall-clock time,
    output and result size by the parent as well, so a worker that misbehaves is still stopped."""

    cpu_seconds: int = 5
    wall_seconds: float = 10
    memory_mb: int = 256  # address space the script may add to the worker's own
    log_bytes: int = 64 * 1024
    result_items: int = 200_000
    result_bytes: int = 64 * 1024 * 1024  # the result as JSON, raw records included

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"Limits.{field.name} must be a positive number, not {value!r}")
        if not isinstance(self.cpu_seconds, int):
            raise ValueError(f"Limits.cpu_seconds must be whole seconds (RLIMIT_CPU), not {self.cpu_seconds!r}")

    def exceeded(self, limit: str) -> str:
        """The message for a run stopped at `limit` (a key of LIMIT_MESSAGES)."""
        return LIMIT_MESSAGES[limit](self) + " exceeded"

    def to_wire(self) -> dict:
        return asdict(self)


def size(n: int) -> str:
    """64 KB, 256 MB, 1500 bytes: a byte count as people write it."""
    for unit, factor in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


LIMIT_MESSAGES = {
    "cpu": lambda lim: f"CPU time limit of {lim.cpu_seconds} s",
    "wall": lambda lim: f"wall-clock limit of {lim.wall_seconds:g} s",
    "memory": lambda lim: f"memory limit of {lim.memory_mb} MB",
    "output": lambda lim: f"output limit of {size(lim.log_bytes)} (log)",
    "result": lambda lim: f"result limit of {lim.result_items:,} items",
    "result_bytes": lambda lim: f"result limit of {size(lim.result_bytes)}",
}
