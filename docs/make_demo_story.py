"""Set up a Major Issue Management story in the demo database, for the README's screenshots:
a case proposed and accepted as a major case, with child cases in several states and a comment.
Everything goes through the action service, as an agent and a manager would do it."""

from caseloom.access import Actor
from caseloom.actions import run_action
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


agent, manager = actor("agent"), actor("manager")
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
print(f"major case {major} with {len(others) + 1} child cases")
