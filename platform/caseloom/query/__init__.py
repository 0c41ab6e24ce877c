"""Conditions and encoded queries: parse, print, compile to SQL."""

from .compile import Selection, count_rows, select_rows
from .conditions import All, AnyOf, Not, Query, QueryError, Term, from_data, parse_encoded, to_encoded
from .operators import OPERATORS, operator

__all__ = ["All", "AnyOf", "Not", "OPERATORS", "Query", "QueryError", "Selection", "Term", "count_rows",
           "from_data", "operator", "parse_encoded", "select_rows", "to_encoded"]
