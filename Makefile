# The two commands: `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Slow tests (schemathesis over the whole API) run in CI (CI=true) or with SLOW=1; a local `make test` skips them.
SLOW_TESTS := $(if $(or $(CI),$(SLOW)),,-m "not slow")

.PHONY: run test setup lint ui clean screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

ui/node_modules/.installed: ui/package.json
	cd ui && npm install --no-audit --no-fund --loglevel=error
	touch ui/node_modules/.installed

setup: $(STAMP) ui/node_modules/.installed

ui: ui/node_modules/.installed

run: setup
	$(BIN)/caseloom validate
	$(BIN)/caseloom init --demo
	$(BIN)/caseloom serve

# PYTHONDONTWRITEBYTECODE (set in some images) is dropped for the tests: the many caseloom processes they
# start then read the platform's compiled modules instead of compiling them each time (5 % of the run).
# --no-loadscope-reorder: the files run longest first (tests/conftest.py, LONGEST_FIRST).
test: setup
	$(BIN)/ruff check platform tests loadtest
	$(BIN)/caseloom validate
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder $(SLOW_TESTS) tests

lint: setup
	$(BIN)/ruff check platform tests loadtest

clean:
	rm -rf $(VENV) ui/node_modules instance .pytest_cache

# Regenerate docs/*.png from a fresh demo (needs Chromium: /usr/bin/chromium or CASELOOM_CHROMIUM).
screenshots: setup
	rm -rf /tmp/caseloom-shots && mkdir -p /tmp/caseloom-shots
	CASELOOM_DATABASE_URL=sqlite:////tmp/caseloom-shots/demo.db $(BIN)/caseloom init --demo --accounts 40 >/dev/null
	CASELOOM_DATABASE_URL=sqlite:////tmp/caseloom-shots/demo.db $(BIN)/python docs/make_demo_story.py
	CASELOOM_DATABASE_URL=sqlite:////tmp/caseloom-shots/demo.db $(BIN)/caseloom serve --port 5077 & \
	  pid=$$!; sleep 3; $(BIN)/caseloom screenshots --url http://127.0.0.1:5077 --out docs; status=$$?; \
	  kill $$pid; exit $$status
