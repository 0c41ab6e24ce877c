"""Definitions: YAML in, immutable objects out."""

from .loader import DefinitionErrors, load_folder, load_sources
from .model import Definitions, FieldDef, TableDef
from .yamlsource import DefinitionError

__all__ = ["DefinitionError", "DefinitionErrors", "Definitions", "FieldDef", "TableDef", "load_folder", "load_sources"]
