# Active customer accounts in the countries named by params["countries"] (default: Germany and France).
# caseloom script run scripts/recipients/by_country.py --params '{"countries": ["DE", "NL"]}'
countries = params.get("countries") or ["DE", "FR"]
accounts = []
for country in countries:
    accounts.extend(account["sys_id"] for account in records.query("customer_account", country=country, active=True))
log(len(accounts), "active accounts in", ", ".join(countries))
result = {"accounts": accounts}
