"""Set up a Major Issue Management story in the demo database, for the README's screenshots:
a case proposed and accepted as a major case, with child cases in several states and a comment.
Everything goes through the action service, as an agent and a manager would do it."""

from caseloom.access import Actor
from caseloom.actions import run_action
from caseloom.jobs.registry import execute_job
from caseloom.query import parse_encoded
from caseloom.runtime import Runtime

CASE = "sn_customerservice_case"
runtime = Runtime.from_env()


def actor(name: str) -> Actor:
    from caseloom.users import actor_for

    with runtime.engine.connect() as conn:
        users = runtime.storage.physical("sys_user")
        sys_id = conn.execute(users.select().where(users.c.user_name == name)).first().sys_id
        return actor_for(runtime.storage, conn, sys_id)


agent, manager, mim = actor("agent"), actor("manager"), actor("mim")
with runtime.transaction(manager) as service:  # a second major case, its list attached, no children yet
    lists = service.query("sn_publications_recipients_list", parse_encoded("type=accounts^ORDERBYname"), ["sys_id"], 2)
    second = service.insert(CASE, {"short_description": "VPN gateway drops connections",
                                   "major_case_state": "proposed", "priority": 2})["sys_id"]
    run_action(service, CASE, second, "accept_major_case", {"notes": "Seen by the network team"})
    run_action(service, CASE, second, "open_case", {})
    service.update(CASE, second, {"recipient_list": lists[-1]["sys_id"]})
with runtime.transaction(agent) as service:
    first = service.query(CASE, parse_encoded("state=10^accountISNOTEMPTY^ORDERBYnumber"), ["sys_id"], 1)[0]["sys_id"]
    run_action(service, CASE, first, "propose_major_case", {"reason": "Storage volumes in Frankfurt are read-only"})
with runtime.transaction(manager) as service:
    outcome = run_action(service, CASE, first, "accept_major_case", {"notes": "Confirmed by the storage team"})
    major = outcome.result["created"][0]["sys_id"]
    service.update(CASE, major, {"short_description": "Frankfurt storage volumes read-only",
                                 "business_impact": "Customers in the EU region cannot write files",
                                 "comments": "We are aware of the issue and working on a fix."})
with runtime.transaction(agent) as service:
    others = service.query(CASE, parse_encoded("stateIN1,10,18^parentISEMPTY^major_case_stateISEMPTY^ORDERBYnumber"),
                           ["sys_id"], 6)
    run_action(service, CASE, major, "add_child_cases", {"cases": [r["sys_id"] for r in others]})
with runtime.transaction(mim) as service:  # one child case per affected customer, by the background job
    service.update(CASE, major, {"recipient_list": lists[0]["sys_id"]})
    job = run_action(service, CASE, major, "create_child_cases",
                     {"comments": "We are working on read-only storage volumes in Frankfurt."}).job
execute_job(runtime, job)
with runtime.transaction(actor("admin")) as service:  # a customer writes back on one child: it needs attention
    child = service.query(CASE, parse_encoded(f"parent={major}^ORDERBYDESCnumber"), ["sys_id"], 1)[0]["sys_id"]
    service.update(CASE, child, {"comments": "Our backups are failing too, please hurry."})
print(f"major case {major} with its child cases; major case {second} ready to create its children")
