"""The system columns every record carries, written in one place for each way a row is written.

`sys_id`, `sys_class_name`, `sys_created_on`/`_by`, `sys_updated_on`/`_by` and `sys_mod_count`
are set here for rows written from Python (`new_row`), by an UPDATE (`touched_sql`) and by an
INSERT ... SELECT (`new_rows_sql`); audit rows have their one shape here too (`audit_row`,
`audit_columns_sql`), so a record's history reads the same whichever path wrote it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa


def new_row(table: str, user: str, stamp: dt.datetime, sys_id: str | None = None) -> dict:
    """The system values of a new row of `table` (its sys_id left out when None: the caller has one)."""
    row = {"sys_class_name": table, "sys_created_on": stamp, "sys_updated_on": stamp,
           "sys_created_by": user, "sys_updated_by": user, "sys_mod_count": 0}
    return row if sys_id is None else {"sys_id": sys_id, **row}


def touched(user: str, stamp: dt.datetime, mod_count: int) -> dict:
    """The system values of an updated row, as Python values (`mod_count`: the new count)."""
    return {"sys_updated_on": stamp, "sys_updated_by": user, "sys_mod_count": mod_count}


def touched_sql(physical: sa.Table, user: str, stamp: Any) -> dict:
    """The same in an UPDATE: the count goes up by one in SQL, whatever it was."""
    return {"sys_updated_on": stamp, "sys_updated_by": user, "sys_mod_count": physical.c.sys_mod_count + 1}


def new_rows_sql(table: str, user: str, stamp: Any, sys_id: sa.ColumnElement) -> dict:
    """The system columns of the rows of an INSERT ... SELECT (`sys_id`: an SQL expression, one per row)."""
    if not isinstance(stamp, sa.ColumnElement):
        stamp = sa.literal(stamp, sa.DateTime)
    user_value = sa.literal(user)
    return {"sys_id": sys_id, "sys_class_name": sa.literal(table), "sys_created_on": stamp, "sys_updated_on": stamp,
            "sys_created_by": user_value, "sys_updated_by": user_value, "sys_mod_count": sa.literal(0)}


def audit_row(table: str, sys_id: str, checkpoint: int, field: str, old: str | None, new: str | None, user: str,
              transaction: str) -> dict:
    """One sys_audit row (its own system values are added where it is inserted)."""
    return {"tablename": table, "documentkey": sys_id, "fieldname": field, "oldvalue": old, "newvalue": new,
            "user": user, "record_checkpoint": checkpoint, "transaction": transaction}


def audit_columns_sql(physical: sa.Table, field: str, old: sa.ColumnElement, new: sa.ColumnElement, user: str,
                      transaction: str) -> dict:
    """The audit columns of an INSERT ... SELECT from `physical`: one row per selected record, at the
    checkpoint its coming update makes."""
    return {"tablename": physical.c.sys_class_name, "documentkey": physical.c.sys_id, "fieldname": sa.literal(field),
            "oldvalue": old, "newvalue": new, "user": sa.literal(user),
            "record_checkpoint": physical.c.sys_mod_count + 1, "transaction": sa.literal(transaction)}
