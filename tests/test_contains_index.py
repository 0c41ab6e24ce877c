"""A table's `contains_index` (caseloom.containsindex): on PostgreSQL a trigram index over each named
field's lowered value, which "contains", "starts with" and "ends with" conditions and a reference's
type-ahead are looked up in; built and dropped with the definitions; nothing on SQLite, where the
same searches answer the same. And the type-ahead itself: the first ten by display value, records
without one never offered. A generic app of its own, on both databases."""

from __future__ import annotations

import html
import re
import uuid
from dataclasses import replace

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from caseloom.cli import main
from caseloom.definitions import load_folder
from caseloom.definitions.store import version_of
from caseloom.migrate import migrate
from caseloom.query import parse_encoded
from caseloom.query.compile import select_rows
from caseloom.storage import Storage
from conftest import DEFINITIONS, basic, errors_after_edit, pg_database
from small_app import small_app, write_folder

SHOP = ("table: x_shop\nnumber: {prefix: SHP, digits: 4}\ndisplay: name\ncontains_index: [name, number]\n"
        "fields:\n  number: {type: string, read_only: true}\n  name: {type: string, index: false}\n  city: {type: string}\n"
        "list: [number, name, city]\nform: [number, name, city]\n")
FILES = {
    "tables/x_shop.yaml": SHOP,
    "tables/x_order.yaml": "table: x_order\ndisplay: title\nfields:\n  title: {type: string}\n"
                           "  shop: {type: reference, to: x_shop}\nlist: [title, shop]\nform: [title, shop]\n",
    "roles.yaml": "roles:\n  x_clerk: {}\n",
    "access/x.yaml": "access:\n  - {table: x_shop, operations: [read], roles: [x_clerk]}\n"
                     "  - {table: x_order, operations: [read, write, create], roles: [x_clerk]}\n",
}
NAMES = ["Harbour Books", "Book Nook", "Paper Harbour", "The Bookshop", "Garden Centre", "BOOKWORMS",
         "Nook & Cranny", "Ebook Store", "Harbourside Café", "Bookbinders", "Old Books", "Books Galore",
         "Rare Books Ltd", "Bookends"]


@pytest.fixture
def shops(config, tmp_path):
    with small_app(config, tmp_path, FILES, {"clerk": ["x_clerk"]}) as small:
        with small.runtime.transaction() as service:
            for i, name in enumerate(NAMES):
                service.insert("x_shop", {"name": name, "city": f"City {i % 3}"})
            service.insert("x_shop", {"city": "Nowhere"})  # no name: never an option
        yield small


def contains_indexes(conn: sa.Connection) -> dict[str, str]:
    """The database's contains indexes: name -> definition (PostgreSQL), none on SQLite."""
    if conn.dialect.name != "postgresql":
        found = conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'cx%'"))
        return dict.fromkeys(found.scalars(), "")
    rows = conn.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'cx\\_%'"))
    return dict(rows.all())


def names_matching(small, encoded: str) -> list[str]:
    with small.runtime.transaction() as service:
        return [r["name"] for r in service.query("x_shop", parse_encoded(encoded), ["name"])]


SEARCHES = {  # condition -> the names it matches, whatever the case of the text or the names
    "nameLIKEbook": ["Book Nook", "Bookbinders", "Bookends", "Books Galore", "BOOKWORMS", "Ebook Store",
                     "Harbour Books", "Old Books", "Rare Books Ltd", "The Bookshop"],
    "nameLIKEHARBOUR": ["Harbour Books", "Harbourside Café", "Paper Harbour"],
    "nameSTARTSWITHbook": ["Book Nook", "Bookbinders", "Bookends", "Books Galore", "BOOKWORMS"],
    "nameENDSWITHbooks": ["Harbour Books", "Old Books"],
    "nameLIKEcafé": ["Harbourside Café"],
    "nameLIKEzzz": [],
    "numberLIKE1001": ["Harbour Books"],
}


def test_a_contains_index_is_built_with_the_schema_and_serves_contains_searches(shops):
    runtime = shops.runtime
    with runtime.engine.connect() as conn:
        built = contains_indexes(conn)
    for condition, expected in SEARCHES.items():
        assert sorted(names_matching(shops, condition)) == sorted(expected), condition
    if runtime.engine.dialect.name != "postgresql":
        assert built == {}
        return
    assert sorted(built) == ["cx_x_shop_name", "cx_x_shop_number"]
    assert all("USING gin (lower((" in d and "gin_trgm_ops" in d for d in built.values()), built
    # the index serves the operators' own expression: with the planner told to read neither the whole table
    # nor an index whole (it would, the table being small), it looks the text up in it. (Here the name has
    # no B-tree index of its own, which the planner could read whole instead.)
    with runtime.transaction() as service:
        service.conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        service.conn.exec_driver_sql("SET LOCAL enable_indexscan = off")
        for condition, index in (("nameLIKEbookbind", "cx_x_shop_name"), ("nameENDSWITHgalore", "cx_x_shop_name"),
                                 ("numberLIKE1003", "cx_x_shop_number")):
            stmt, _ = select_rows(service.storage, "x_shop", parse_encoded(condition), ["name"], 10, 0, None)
            compiled = stmt.compile(service.conn, compile_kwargs={"literal_binds": True})
            plan = "\n".join(service.conn.exec_driver_sql(f"EXPLAIN {compiled}").scalars())
            assert index in plan, (condition, plan)


def test_removing_a_contains_index_drops_it_and_declaring_it_again_builds_it(shops, tmp_path):
    runtime = shops.runtime
    without = write_folder(tmp_path / "without", {**FILES, "tables/x_shop.yaml": SHOP.replace(
        "contains_index: [name, number]\n", "contains_index: [name]\n")})
    dropped = migrate(runtime.engine, Storage.of(load_folder(without)))
    again = migrate(runtime.engine, Storage.of(load_folder(write_folder(tmp_path / "with", FILES))))
    if runtime.engine.dialect.name != "postgresql":
        assert (dropped, again) == ([], [])
        return
    assert dropped == ["drop the contains index cx_x_shop_number"]
    assert again == ["build the contains index of x_shop.number"]
    with runtime.engine.connect() as conn:
        assert sorted(contains_indexes(conn)) == ["cx_x_shop_name", "cx_x_shop_number"]
    assert migrate(runtime.engine, Storage.of(load_folder(tmp_path / "with"))) == []  # nothing left to do


def test_a_contains_index_a_build_left_invalid_is_built_again(shops, tmp_path):
    """PostgreSQL: a concurrent build that failed or whose process died leaves an invalid index of the
    name; the next migration drops it and builds the index again (after its commit: the table has rows)."""
    runtime = shops.runtime
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no contains index")
    with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("DROP INDEX cx_x_shop_number")
        with pytest.raises(sa.exc.IntegrityError):  # three shops a city: a unique index fails half way
            conn.exec_driver_sql("CREATE UNIQUE INDEX CONCURRENTLY cx_x_shop_number ON x_shop (city)")
        valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'cx_x_shop_number'::regclass"
        assert conn.exec_driver_sql(valid).scalar() is False
        assert migrate(runtime.engine, Storage.of(load_folder(write_folder(tmp_path / "again", FILES)))) == [
            "build the contains index of x_shop.number"]
        assert conn.exec_driver_sql(valid).scalar() is True
        assert "gin_trgm_ops" in contains_indexes(conn)["cx_x_shop_number"]
    assert sorted(names_matching(shops, "numberLIKE1003")) == ["Paper Harbour"]


def options(small, text: str) -> list[str]:
    page = small.client.get(f"/ui/reference/x_order/shop?q={text}").get_data(as_text=True)
    return [html.unescape(o) for o in re.findall(r'<li role="option"[^>]*>(.*?)</li>', page, re.S)]


BOOKS = {"Book Nook", "Bookbinders", "Bookends", "Books Galore", "BOOKWORMS", "Ebook Store", "Harbour Books",
         "Old Books", "Rare Books Ltd", "The Bookshop"}


@pytest.mark.parametrize("text, expected", [
    ("book", BOOKS),
    ("harb", {"Harbour Books", "Harbourside Café", "Paper Harbour"}),
    ("HARB", {"Harbour Books", "Harbourside Café", "Paper Harbour"}),
    ("SHP1003", {"Paper Harbour"}),
    ("SHP1015", set()),  # the shop without a name: it would be an empty option
    ("zzz", set()),
], ids=["a word", "part of a word", "any case", "a number", "a record without a name", "nothing has it"])
def test_the_type_ahead_offers_the_records_whose_name_or_number_contains_the_text(shops, text, expected):
    shops.sign_in("clerk")
    assert set(options(shops, text)) == expected


@pytest.mark.parametrize("text", ["", "o"], ids=["nothing typed", "one letter"])
def test_with_more_than_ten_matches_the_type_ahead_offers_the_first_ten_by_name(shops, text):
    shops.sign_in("clerk")
    condition = f"nameISNOTEMPTY^nameLIKE{text}^ORnumberLIKE{text}" if text else "nameISNOTEMPTY"
    with shops.runtime.transaction() as service:  # the database's own order (its collation)
        ordered = [r["name"] for r in service.query("x_shop", parse_encoded(condition + "^ORDERBYname"), ["name"])]
    assert len(ordered) > 10
    assert options(shops, text) == ordered[:10]


BAD = {
    "not a field": ("contains_index: [name, number]", "contains_index: [name, colour]",
                    "contains_index field 'colour' is not a string or text field of 'customer_account'"),
    "not a string": ("contains_index: [name, number]", "contains_index: [name, primary_contact]",
                     "contains_index field 'primary_contact' is not a string or text field of 'customer_account'"),
    "not a list": ("contains_index: [name, number]", "contains_index: name", "contains_index"),
    "twice": ("contains_index: [name, number]", "contains_index: [name, name]", "contains_index"),
}


@pytest.mark.parametrize("old, new, message", BAD.values(), ids=BAD.keys())
def test_a_mistake_in_a_contains_index_is_located_and_named(definitions_copy, old, new, message):
    errors = errors_after_edit(definitions_copy, "tables/customer_account.yaml", old, new)
    assert any("customer_account.yaml:" in e and message in e for e in errors), errors


def test_without_the_right_to_create_pg_trgm_init_changes_nothing_and_says_who_can(database_url, tmp_path,
                                                                                   monkeypatch):
    """`caseloom init` as a database user who may create tables but not extensions (the database is
    another's), on an empty database: exit 1, one line saying what to run and as whom, no table made."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL matter")
    role = f"caseloom_plain_{uuid.uuid4().hex[:8]}"
    with pg_database() as url:  # an empty database, owned by the test's superuser: no pg_trgm in it
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD 'plain'")
            conn.exec_driver_sql(f"GRANT USAGE, CREATE ON SCHEMA public TO {role}")
        try:
            monkeypatch.setenv("CASELOOM_DATABASE_URL", sa.engine.make_url(url).set(
                username=role, password="plain").render_as_string(hide_password=False))
            monkeypatch.setenv("CASELOOM_DEFINITIONS", str(DEFINITIONS))
            monkeypatch.setenv("CASELOOM_INSTANCE", str(tmp_path / "instance"))
            monkeypatch.setenv("CASELOOM_QUEUE", f"sqlite:///{tmp_path / 'queue.db'}")
            result = CliRunner().invoke(main, ["init"])
            assert result.exit_code == 1, result.output
            assert result.output.startswith("caseloom init: a contains_index needs PostgreSQL's pg_trgm extension"), \
                result.output
            assert 'permission denied to create extension "pg_trgm"' in result.output, result.output
            assert "CREATE EXTENSION pg_trgm;" in result.output, result.output
            with admin.connect() as conn:
                assert sa.inspect(conn).get_table_names() == []
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP OWNED BY {role}")
                conn.exec_driver_sql(f"DROP ROLE {role}")
            admin.dispose()


def test_a_definitions_change_needing_pg_trgm_that_cannot_be_made_is_refused_in_words(config, tmp_path):
    """The Definitions API and the Definitions area's Apply, as an app whose database user may use the
    tables but not create extensions: a table given a contains_index is refused (409) with the words
    `caseloom init` says; nothing changed."""
    if not config.database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL matter")
    from caseloom.web import create_app, db

    role = f"caseloom_plain_{uuid.uuid4().hex[:8]}"
    plain_shop = SHOP.replace("contains_index: [name, number]\n", "")
    with pg_database() as url:  # no pg_trgm in it, and the app's tables made by the superuser
        with small_app(replace(config, database_url=url), tmp_path, {**FILES, "tables/x_shop.yaml": plain_shop},
                       {"boss": ["admin"]}, own_database=True):
            pass
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD 'plain'")
            for grant in ("USAGE ON SCHEMA public", "ALL ON ALL TABLES IN SCHEMA public",
                          "ALL ON ALL SEQUENCES IN SCHEMA public"):
                conn.exec_driver_sql(f"GRANT {grant} TO {role}")
        as_plain = sa.engine.make_url(url).set(username=role, password="plain").render_as_string(hide_password=False)
        app = create_app(replace(config, database_url=as_plain, definitions=str(tmp_path / "small-definitions")),
                         load_folder(tmp_path / "small-definitions"), testing=True)
        try:
            client, boss = app.test_client(), basic("boss", "boss")
            answer = client.put("/api/caseloom/definitions/tables/x_shop.yaml", data=SHOP, headers=boss)
            assert answer.status_code == 409, answer.get_data(as_text=True)
            said = answer.get_json()["error"]
            assert "nothing was changed" in said["message"], said
            assert "pg_trgm" in said["detail"] and "CREATE EXTENSION pg_trgm;" in said["detail"], said
            # the Definitions area's Apply: the review again, with the words, and nothing changed
            token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True))
            client.post("/login", data={"user_name": "boss", "user_password": "boss", "csrf_token": token.group(1)})
            token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").get_data(as_text=True))
            page = client.post("/ui/definitions/apply", data={
                "path": "tables/x_shop.yaml", "base": version_of(plain_shop), "text": SHOP, "csrf_token": token.group(1)})
            text = html.unescape(page.get_data(as_text=True))
            assert page.status_code == 409, text
            assert "Nothing was changed: a contains_index needs PostgreSQL's pg_trgm extension" in text, text
            assert client.get("/api/caseloom/definitions/tables/x_shop.yaml", headers=boss).get_data(
                as_text=True) == plain_shop
        finally:
            with app.app_context():
                db.engine.dispose()
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP OWNED BY {role}")
                conn.exec_driver_sql(f"DROP ROLE {role}")
            admin.dispose()
