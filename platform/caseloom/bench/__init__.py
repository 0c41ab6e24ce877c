"""The performance suite (`caseloom bench`, contract section 10)."""

from .suite import DEFAULT_SCALE, BenchRun, Result

__all__ = ["DEFAULT_SCALE", "BenchRun", "Result"]
