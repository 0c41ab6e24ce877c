"""The performance suite (`caseloom bench`, contract section 10)."""

from .suite import BenchRun, Result

__all__ = ["BenchRun", "Result"]
