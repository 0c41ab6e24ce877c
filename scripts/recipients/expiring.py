# Customers whose patience is expiring: active accounts with a case still open (New, Open or
# Awaiting Info) that was opened more than params["days"] days ago (default 30).
# caseloom script run scripts/recipients/expiring.py --params '{"days": 14}'
days = int(params.get("days") or 30)
cutoff = (datetime.datetime.now() - datetime.timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")
active = {account["sys_id"] for account in records.query("customer_account", active=True)}
waiting = []
for state in (1, 10, 18):
    for case in records.query("sn_customerservice_case", state=state):
        # datetimes arrive as "YYYY-MM-DD HH:MM:SS", so text order is time order
        if case["account"] in active and case["opened_at"] and case["opened_at"] < cutoff:
            waiting.append(case["account"])
log(len(set(waiting)), "accounts with cases open for more than", days, "days")
result = {"accounts": sorted(set(waiting))}
