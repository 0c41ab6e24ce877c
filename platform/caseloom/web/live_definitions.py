"""The definition set a server process runs, switched without a restart.

A change applied here (from the definitions API or the Definitions area, one path) is
committed, written back to the definitions folder and installed in this process at once;
every other process sharing the database sees the generation move and loads the stored set
at the start of its next request.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path

from flask import Flask, current_app, g, request

from .. import indexbuild
from ..database import forget_statements
from ..definitions import load_sources
from ..definitions.changes import ChangePlan, apply_change, plan_change
from ..definitions.store import DISPLAY_ROOT, DefinitionStore, write_to_folder
from ..properties import seed_properties
from ..runtime import Runtime
from ..serving import still_working
from ..timing.seed import seed_timing
from . import db
from .auth import DEFINITIONS_UNCHECKED, FOLLOW_DEFINITIONS, connection, runtime

GENERATION = "caseloom_generation"
_loading = threading.Lock()  # a process's threads load a new definition set once between them
# app.extensions: the endpoints answered without reading the database first (/health must answer
# when the database is down)
STANDALONE = "caseloom_standalone_endpoints"


def store() -> DefinitionStore:
    """The definition files of this request's database."""
    return DefinitionStore(runtime().storage, connection())


def plan(changes: Mapping[str, str | None], bases: Mapping[str, str] | None = None) -> ChangePlan:
    """The dry run of a change (see definitions.changes.plan_change)."""
    return plan_change(store(), changes, bases)


def apply(changes: Mapping[str, str | None], *, force: bool = False, accepted: Collection[str] = (),
          bases: Mapping[str, str] | None = None, action: str | None = None) -> ChangePlan:
    """Apply a change as the signed-in user, commit it, write it to the definitions folder and
    switch this process to the new set; raises what definitions.changes.apply_change raises.
    Declared properties get their sys_properties rows in the same transaction, as at init. New
    indexes of tables that hold rows are built after the commit, concurrently (`indexbuild`): what
    could not be built is in the plan's `not_built`."""
    definition_store = store()
    done = apply_change(definition_store, changes, g.actor.user_name, force=force, accepted=accepted,
                        bases=bases, action=action)
    if done.empty:
        return done
    current = runtime()
    new_runtime = Runtime(current.config, done.defs, engine=current.engine)
    service = new_runtime.records(connection(), g.actor)
    seed_properties(service)
    seed_timing(service)
    generation = definition_store.generation()
    later = indexbuild.take_later(definition_store.conn)
    db.session.commit()
    folder = Path(current.config.definitions)
    for change in done.files:
        write_to_folder(folder, change.path, change.new)
    install(current_app, new_runtime, generation)
    if later:
        db.session.commit()  # nothing of this request open while the indexes wait for the table's writers
        done = replace(done, not_built=tuple(indexbuild.build_later(current.engine, later, beat=still_working)))
    return done


def install(app: Flask, new_runtime: Runtime, generation: int | None) -> None:
    """Serve `new_runtime` from now on; the tables may have changed with it, so no connection runs a
    statement prepared before (`database.forget_statements`), this request's included."""
    forget_statements(new_runtime.engine, connection())
    app.extensions["caseloom"] = new_runtime
    app.extensions[GENERATION] = generation


def standalone(app: Flask, endpoint: str) -> None:
    """Serve `endpoint` with the definitions this process has, without asking the database first."""
    app.extensions.setdefault(STANDALONE, set()).add(endpoint)


def follow(generation: int | None) -> Runtime:
    """This request's runtime, once the definitions' generation is checked: `generation` as another
    statement read it alongside (a sign-in's: `auth._checking_definitions`), or None to read it now. When another
    process changed the set, the stored one is loaded first."""
    app = current_app._get_current_object()
    rt: Runtime = app.extensions["caseloom"]
    definition_store = DefinitionStore(rt.storage, connection())
    if generation is None:
        generation = definition_store.generation()
    if generation != app.extensions.get(GENERATION):
        with _loading:  # one thread of the process loads the set; the others wait for it, not parse it too
            if generation != app.extensions.get(GENERATION):
                texts = definition_store.texts()
                if texts:
                    defs = load_sources(sorted(texts.items()), display_root=DISPLAY_ROOT)
                    install(app, Runtime(rt.config, defs, engine=rt.engine), generation)
                else:
                    app.extensions[GENERATION] = generation
    g.pop(DEFINITIONS_UNCHECKED, None)
    g.runtime = app.extensions["caseloom"]
    return g.runtime


def register(app: Flask) -> None:
    app.extensions[FOLLOW_DEFINITIONS] = follow

    @app.before_request
    def _follow_definitions() -> None:
        """Another process may have changed the definitions: the request checks before it reads
        anything else, with its first statement (`auth.runtime`, `auth._checking_definitions`)."""
        if request.endpoint not in app.extensions.get(STANDALONE, ()):
            setattr(g, DEFINITIONS_UNCHECKED, True)
