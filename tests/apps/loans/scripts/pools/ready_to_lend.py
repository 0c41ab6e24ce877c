# ruff: noqa: F821  (records and log are globals the sandbox gives a script)
# Assets in good or worn condition that are not on loan, for the "Ready to lend" pool.
# The pool's type is `assets`, so the result is keyed by its result_key: {"assets": [...]}.
ready = []
for condition in ["good", "worn"]:
    for asset in records.query("loan_asset", condition=condition, on_loan=False):
        ready.append(asset["sys_id"])
log(len(ready), "assets ready to lend")
result = {"assets": sorted(ready)}
