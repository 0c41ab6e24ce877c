"""Conditions and encoded queries: parse, print, compile to SQL, evaluate in Python."""

from .compile import Selection, count_rows, select_rows
from .conditions import All, AnyOf, Not, PropertyTerm, Query, QueryError, Term, from_data, parse_encoded, to_encoded
from .dynamic import acting_as, bind_acting, fixed_clock, resolve_dynamic, unbind_acting
from .meaning import bind_fields
from .operators import OPERATORS, operator

__all__ = ["All", "AnyOf", "Not", "OPERATORS", "PropertyTerm", "Query", "QueryError", "Selection", "Term",
           "acting_as", "bind_acting", "bind_fields", "count_rows", "fixed_clock", "from_data", "operator",
           "parse_encoded", "resolve_dynamic", "select_rows", "to_encoded", "unbind_acting"]
