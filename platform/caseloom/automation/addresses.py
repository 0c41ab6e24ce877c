"""Where a notification's recipients' e-mail addresses are: paths from the record, checked without a database.

A recipient path (`recipients.fields`) is a dot-walk from the notified record that ends on an
e-mail field (`account.primary_contact.email`) or on a reference to a table that has one
(`contact`, `building.manager`), whose `email` field is then the address.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the definitions loader imports this module
    from ..definitions.model import FieldDef, TableDef

ADDRESS_FIELD = "email"  # the field of a referenced record (a user, a contact) that holds its address


def recipient_path_problem(tables: Mapping[str, TableDef], table: TableDef | str, path: str) -> str | None:
    """What is wrong with a recipient path of `table`, or None when it ends on an e-mail address:
    a field that does not exist, a hop through a field that is not a reference, an end on a field
    that is neither an e-mail field nor a reference, or a reference to a table without an e-mail
    field named `email`."""
    start = tables[table] if isinstance(table, str) else table
    end, problem = _walk(tables, start, path)
    if problem is not None:
        return problem
    owner, field = end
    if field.type == "email":
        return None
    if field.type != "reference":
        return (f"{path!r} ends on {field.name!r}, a {field.type} field of {owner.name!r}: a recipient path ends on "
                f"an e-mail field or on a reference to a table with an {ADDRESS_FIELD!r} field (such as sys_user)")
    target = tables.get(field.reference)
    address = target.field(ADDRESS_FIELD) if target is not None else None
    if address is None:
        return (f"{path!r} refers to {field.reference!r}, which has no {ADDRESS_FIELD!r} field: "
                f"end the path on an e-mail field of {field.reference!r} or of a table it refers to")
    if address.type != "email":
        return f"{path!r} refers to {field.reference!r}, whose {ADDRESS_FIELD!r} field is a {address.type} field, " \
               "not an e-mail field"
    return None


def address_path(tables: Mapping[str, TableDef], table: TableDef, path: str) -> str:
    """The path of the address a recipient path names: through a reference, the referenced
    record's e-mail field; else the path itself."""
    end, _ = _walk(tables, table, path)
    return f"{path}.{ADDRESS_FIELD}" if end is not None and end[1].type == "reference" else path


def _walk(tables: Mapping[str, TableDef], table: TableDef, path: str
          ) -> tuple[tuple[TableDef, FieldDef] | None, str | None]:
    """The field a dot-walked path ends on, with the table it belongs to; or None and what is wrong."""
    current = table
    parts = path.split(".")
    for i, part in enumerate(parts):
        field = current.field(part)
        if field is None:
            return None, f"{path!r}: table {current.name!r} has no field {part!r}"
        if i == len(parts) - 1:
            return (current, field), None
        if field.type == "reference" and field.reference not in tables:
            return None, f"{path!r}: {part!r} of {current.name!r} refers to {field.reference!r}, which is not a table"
        if field.type != "reference":
            return None, f"{path!r}: {part!r} is a {field.type} field of {current.name!r}, not a reference, " \
                         "so it cannot be dot-walked"
        current = tables[field.reference]
    return None, f"empty recipient path {path!r}"
