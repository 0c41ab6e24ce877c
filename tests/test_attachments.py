"""ServiceNow's Attachment API: files kept with a record, access following the record, limits
as system properties, bad input refused naming what and where."""

import hashlib
import json

import pytest

CASES = "/api/now/table/sn_customerservice_case"
ACCOUNTS = "/api/now/table/customer_account"
FILES = "/api/now/attachment"


def first(api, path: str) -> str:
    return api.get(f"{path}?sysparm_limit=1&sysparm_fields=sys_id").json["result"][0]["sys_id"]


def upload(api, table: str, sys_id: str, name: str, data: bytes, content_type: str = "text/plain"):
    return api.client.post(f"{FILES}/file?table_name={table}&table_sys_id={sys_id}&file_name={name}", data=data,
                           headers={**api.headers, "Content-Type": content_type})


def set_property(as_user, name: str, value: str) -> None:
    admin = as_user("admin")
    prop = admin.get(f"/api/now/table/sys_properties?sysparm_query=name={name}").json["result"][0]
    assert admin.patch(f"/api/now/table/sys_properties/{prop['sys_id']}", json={"value": value}).status_code == 200


def test_a_file_goes_up_comes_back_and_is_listed_with_its_record(as_user):
    agent = as_user("agent")
    case = first(agent, CASES)
    data = b"disk full\n\xe2\x9c\x93"

    made = upload(agent, "sn_customerservice_case", case, "log.txt", data)

    assert made.status_code == 201, made.json
    result = made.json["result"]
    assert (result["file_name"], result["content_type"], result["size_bytes"]) == ("log.txt", "text/plain", str(len(data)))
    assert (result["table_name"], result["table_sys_id"]) == ("sn_customerservice_case", case)
    assert result["hash"] == hashlib.sha256(data).hexdigest()
    assert result["sys_created_by"] == "agent"
    assert result["download_link"].endswith(f"/api/now/attachment/{result['sys_id']}/file")
    assert made.headers["Location"].endswith(f"/api/now/attachment/{result['sys_id']}")

    assert agent.get(f"{FILES}/{result['sys_id']}").json["result"] == result
    file = agent.get(f"{FILES}/{result['sys_id']}/file")
    assert file.status_code == 200 and file.data == data
    assert file.headers["Content-Type"].startswith("text/plain")
    assert file.headers["Content-Disposition"].startswith('attachment; filename="log.txt"')
    assert file.headers["X-Content-Type-Options"] == "nosniff"
    assert json.loads(file.headers["X-Attachment-Metadata"])["sys_id"] == result["sys_id"]

    listed = agent.get(f"{FILES}?sysparm_query=table_sys_id={case}")
    assert [row["sys_id"] for row in listed.json["result"]] == [result["sys_id"]]
    assert listed.headers["X-Total-Count"] == "1"


@pytest.mark.parametrize("name, given, stored", [
    ("report.pdf", "application/octet-stream", "application/pdf"),
    ("report.pdf", "", "application/pdf"),
    ("trace.log", "application/octet-stream", "text/plain"),
    ("trace.log", "text/x-log", "text/plain"),  # what Chromium sends
    ("photo.jpg", "image/jpg", "image/jpeg"),
    ("notes.txt", "text/plain; charset=utf-8", "text/plain"),
])
def test_the_type_is_the_requests_or_guessed_from_the_name(as_user, name, given, stored):
    agent = as_user("agent")
    made = upload(agent, "sn_customerservice_case", first(agent, CASES), name, b"bytes", given)
    assert made.status_code == 201 and made.json["result"]["content_type"] == stored


def test_a_name_outside_ascii_is_kept_and_downloaded_under_its_name(as_user):
    agent = as_user("agent")
    made = upload(agent, "sn_customerservice_case", first(agent, CASES), "relevé%20d'écran.png", b"\x89PNG....",
                  "image/png")
    assert made.status_code == 201 and made.json["result"]["file_name"] == "relevé d'écran.png"
    file = agent.get(f"{FILES}/{made.json['result']['sys_id']}/file")
    assert "filename*=UTF-8''relev%C3%A9%20d%27%C3%A9cran.png" in file.headers["Content-Disposition"]


def test_access_follows_the_record(as_user):
    agent, author, manager = as_user("agent"), as_user("author"), as_user("manager")
    case, account = first(agent, CASES), first(agent, ACCOUNTS)
    on_case = upload(agent, "sn_customerservice_case", case, "case.txt", b"case").json["result"]["sys_id"]

    # the author may not read cases: their attachments do not exist for them
    assert author.get(f"{FILES}/{on_case}").status_code == 404
    assert author.get(f"{FILES}/{on_case}/file").status_code == 404
    assert author.delete(f"{FILES}/{on_case}").status_code == 404
    assert author.get(f"{FILES}?sysparm_query=table_sys_id={case}").headers["X-Total-Count"] == "0"
    assert upload(author, "sn_customerservice_case", case, "x.txt", b"x").status_code == 404
    # the agent may read accounts but not write them; a manager may
    refused = upload(agent, "customer_account", account, "contract.txt", b"terms")
    assert refused.status_code == 403 and "may not write" in json.dumps(refused.json["error"])
    on_account = upload(manager, "customer_account", account, "contract.txt", b"terms")
    assert on_account.status_code == 201
    assert agent.get(f"{FILES}/{on_account.json['result']['sys_id']}/file").data == b"terms"
    assert agent.delete(f"{FILES}/{on_account.json['result']['sys_id']}").status_code == 403
    # the Table API on sys_attachment is for administrators
    assert agent.get("/api/now/table/sys_attachment").status_code == 403
    assert as_user("admin").get("/api/now/table/sys_attachment").status_code == 200


def test_deleting_an_attachment_or_its_record_deletes_the_file(as_user, runtime):
    agent, manager = as_user("agent"), as_user("manager")
    case = agent.post(CASES, json={"short_description": "Attachment test"}).json["result"]["sys_id"]
    one = upload(agent, "sn_customerservice_case", case, "one.txt", b"1").json["result"]["sys_id"]
    two = upload(agent, "sn_customerservice_case", case, "two.txt", b"2").json["result"]["sys_id"]

    assert agent.delete(f"{FILES}/{one}").status_code == 204
    assert agent.get(f"{FILES}/{one}").status_code == 404
    assert manager.delete(f"{CASES}/{case}").status_code == 204
    assert manager.get(f"{FILES}/{two}").status_code == 404
    with runtime.engine.connect() as conn:
        doc = runtime.storage.internal("sys_attachment_doc")
        assert conn.execute(doc.select().where(doc.c.sys_id.in_([one, two]))).all() == []


@pytest.mark.parametrize("query, body, content_type, status, message", [
    ("table_sys_id=X&file_name=a.txt", b"x", "text/plain", 400, "table_name is required"),
    ("table_name=sn_customerservice_case&file_name=a.txt", b"x", "text/plain", 400, "table_sys_id is required"),
    ("table_name=sn_customerservice_case&table_sys_id=CASE", b"x", "text/plain", 400, "file_name is required"),
    ("table_name=no_such_table&table_sys_id=CASE&file_name=a.txt", b"x", "text/plain", 404, "no_such_table"),
    ("table_name=sn_customerservice_case&table_sys_id=0123&file_name=a.txt", b"x", "text/plain", 404, "0123"),
    ("table_name=sn_customerservice_case&table_sys_id=CASE&file_name=a.txt", b"", "text/plain", 400, "empty"),
    ("table_name=sn_customerservice_case&table_sys_id=CASE&file_name=../a.txt", b"x", "text/plain", 400, "path"),
    ("table_name=sn_customerservice_case&table_sys_id=CASE&file_name=" + "a" * 256, b"x", "text/plain", 400,
     "longer than 255"),
    ("table_name=sn_customerservice_case&table_sys_id=CASE&file_name=page.html", b"<script>", "text/html", 415,
     "text/html"),
    ("table_name=sn_customerservice_case&table_sys_id=CASE&file_name=run.exe", b"MZ", "application/octet-stream", 415,
     "may not be attached"),
])
def test_bad_uploads_are_refused_naming_what(as_user, query, body, content_type, status, message):
    agent = as_user("agent")
    query = query.replace("CASE", first(agent, CASES))
    r = agent.client.post(f"{FILES}/file?{query}", data=body, headers={**agent.headers, "Content-Type": content_type})
    assert r.status_code == status, r.json
    assert message in r.json["error"]["message"] + r.json["error"]["detail"]
    assert agent.get(f"{FILES}?sysparm_query=file_nameSTARTSWITHa").headers["X-Total-Count"] == "0"


def test_the_size_limit_and_the_types_are_system_properties(as_user):
    agent = as_user("agent")
    case = first(agent, CASES)
    set_property(as_user, "caseloom.attachment.max_bytes", "10")
    too_big = upload(agent, "sn_customerservice_case", case, "big.txt", b"x" * 11)
    assert too_big.status_code == 413 and "larger than 10 bytes" in too_big.json["error"]["message"]
    assert upload(agent, "sn_customerservice_case", case, "fits.txt", b"x" * 10).status_code == 201
    set_property(as_user, "caseloom.attachment.content_types", "text/*")
    assert upload(agent, "sn_customerservice_case", case, "page.html", b"<p>", "text/html").status_code == 201
    assert upload(agent, "sn_customerservice_case", case, "a.png", b"PNG", "image/png").status_code == 415


def test_a_list_pages_and_counts_only_what_the_user_may_read(as_user):
    agent, manager = as_user("agent"), as_user("manager")
    case, account = first(agent, CASES), first(agent, ACCOUNTS)
    for i in range(3):
        assert upload(agent, "sn_customerservice_case", case, f"p{i}.txt", b"p").status_code == 201
    assert upload(manager, "customer_account", account, "acct.txt", b"a").status_code == 201
    page = agent.get(f"{FILES}?sysparm_query=file_nameSTARTSWITHp&sysparm_limit=2&sysparm_offset=2")
    assert page.headers["X-Total-Count"] == "3" and len(page.json["result"]) == 1
    author = as_user("author")  # reads accounts, not cases
    assert [r["file_name"] for r in author.get(FILES).json["result"]] == ["acct.txt"]
    bad = agent.get(f"{FILES}?sysparm_query=no_such_field=1")
    assert bad.status_code == 400 and "no_such_field" in json.dumps(bad.json)


@pytest.mark.parametrize("params, expected", [
    ("sysparm_fields=file_name,size_bytes", {"file_name": "log.txt", "size_bytes": "4"}),
    ("sysparm_fields=file_name,table_name&sysparm_display_value=all",
     {"file_name": {"display_value": "log.txt", "value": "log.txt"},
      "table_name": {"display_value": "sn_customerservice_case", "value": "sn_customerservice_case"}}),
    ("sysparm_fields=content_type&sysparm_display_value=true", {"content_type": "text/plain"}),
])
def test_the_list_and_one_attachment_have_the_fields_and_display_values_asked_for(as_user, params, expected):
    """sysparm_fields and sysparm_display_value were ignored: every field came back, as values. They
    shape an attachment as the Table API shapes its sys_attachment record; the download link stays."""
    agent = as_user("agent")
    made = upload(agent, "sn_customerservice_case", first(agent, CASES), "log.txt", b"disk").json["result"]
    link = made["download_link"]

    listed = agent.get(f"{FILES}?sysparm_query=sys_id={made['sys_id']}&{params}")
    one = agent.get(f"{FILES}/{made['sys_id']}?{params}")

    assert listed.status_code == 200 and listed.json["result"] == [{**expected, "download_link": link}]
    assert one.status_code == 200 and one.json["result"] == {**expected, "download_link": link}
    table_api = as_user("admin").get(f"/api/now/table/sys_attachment/{made['sys_id']}?{params}").json["result"]
    assert one.json["result"] == {**table_api, "download_link": link}


@pytest.mark.parametrize("params, words", [
    ("sysparm_fields=no_such_field", "sysparm_fields: 'no_such_field' is not a field of 'sys_attachment'"),
    ("sysparm_fields=,,,", "sysparm_fields names no field"),
    ("sysparm_display_value=maybe", "sysparm_display_value must be one of false, true, all, not 'maybe'"),
])
@pytest.mark.parametrize("where", ["list", "one"])
def test_a_bad_sysparm_fields_or_display_value_is_the_table_apis_400(as_user, params, words, where):
    agent = as_user("agent")
    made = upload(agent, "sn_customerservice_case", first(agent, CASES), "log.txt", b"disk").json["result"]
    url = f"{FILES}?{params}" if where == "list" else f"{FILES}/{made['sys_id']}?{params}"

    refused = agent.get(url)

    assert refused.status_code == 400 and words in refused.json["error"]["message"]
    assert refused.json == as_user("admin").get(f"/api/now/table/sys_attachment?{params}").json


# -- on the form ------------------------------------------------------------------------------------------

def test_on_the_form_an_agent_attaches_downloads_and_deletes_a_file(client, as_user):
    import io
    import re

    from conftest import form_token, ui_sign_in

    case = first(as_user("agent"), CASES)
    form = f"/sn_customerservice_case.do?sys_id={case}"
    ui_sign_in(client, "agent")
    page = client.get(form).get_data(as_text=True)
    assert "No files attached." in page and 'enctype="multipart/form-data"' in page

    answer = client.post(f"/ui/attachments/sn_customerservice_case/{case}", content_type="multipart/form-data",
                         data={"csrf_token": form_token(client, form), "file": (io.BytesIO(b"error 42"), "trace.log")})
    assert answer.status_code == 302 and answer.headers["Location"].endswith(f"{form}#attachments")
    page = client.get(form).get_data(as_text=True)
    assert "Attached trace.log." in page
    link = re.search(r'<a href="(/api/now/attachment/([0-9a-f]{32})/file)" download>trace.log</a>', page)
    assert link, page[page.index('id="attachments"'):][:1500]
    assert "8 bytes" in page
    assert client.get(link[1]).data == b"error 42"  # the session downloads it

    refused = client.post(f"/ui/attachments/sn_customerservice_case/{case}", content_type="multipart/form-data",
                          data={"csrf_token": form_token(client, form), "file": (io.BytesIO(b"<p>"), "page.html")})
    assert refused.status_code == 302
    assert "Files of type text/html may not be attached" in client.get(form).get_data(as_text=True)

    gone = client.post(f"/ui/attachments/{link[2]}/delete", data={"csrf_token": form_token(client, form)})
    assert gone.status_code == 302
    page = client.get(form).get_data(as_text=True)
    assert "Deleted trace.log." in page and "No files attached." in page
    no_token = client.post(f"/ui/attachments/sn_customerservice_case/{case}", content_type="multipart/form-data",
                           data={"file": (io.BytesIO(b"x"), "x.txt")})
    assert no_token.status_code == 400  # no CSRF token: refused before anything is written


def test_a_reader_sees_the_files_without_the_controls(client, as_user):
    from conftest import ui_sign_in

    manager, agent = as_user("manager"), as_user("agent")
    account = first(agent, ACCOUNTS)
    assert upload(manager, "customer_account", account, "terms.txt", b"t").status_code == 201
    ui_sign_in(client, "agent")
    page = client.get(f"/customer_account.do?sys_id={account}").get_data(as_text=True)
    section = page[page.index('id="attachments"'):]
    assert ">terms.txt</a>" in section
    assert "Attach a file" not in section and "/delete" not in section.split("</section>")[0]
