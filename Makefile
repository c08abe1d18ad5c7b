# Two commands for a newcomer: `make run` (the platform, embedded, with sample data) and
# `make test`. Both build .venv from the lock file, and the browser assets from
# package-lock.json, on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VENDOR := src/medrobotics/ui/static/vendor
ASSETS := $(VENDOR)/.installed
# `make run` and `make test` started together must not build .venv (or node_modules) at once:
# one build at a time, the second finds it done.
LOCK := $(if $(shell command -v flock),flock .build.lock,)

.PHONY: run test lint fmt bench clean venv assets browser-test

venv:
	@$(LOCK) $(MAKE) --no-print-directory $(STAMP) $(ASSETS)

assets:
	@$(LOCK) $(MAKE) --no-print-directory $(ASSETS)

$(STAMP): requirements/dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

# uPlot (the dashboard's charts), Swagger UI and ReDoc (the API docs), from the npm registry as
# locked, copied into the package (git ignores them; the images copy src/ with them).
# ReDoc's sidebar shows its maker's logo from their CDN: pointed nowhere (the image hides itself
# when it fails), the docs make no request off this machine.
$(ASSETS): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/uplot $(VENDOR)/swagger-ui $(VENDOR)/redoc
	cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css \
		node_modules/uplot/LICENSE $(VENDOR)/uplot/
	cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css \
		node_modules/swagger-ui-dist/favicon-32x32.png node_modules/swagger-ui-dist/LICENSE \
		node_modules/swagger-ui-dist/NOTICE $(VENDOR)/swagger-ui/
	cp node_modules/redoc/bundles/redoc.standalone.js.LICENSE.txt node_modules/redoc/LICENSE \
		$(VENDOR)/redoc/
	sed 's|"https://cdn.redoc.ly/redoc/logo-mini.svg"|""|' \
		node_modules/redoc/bundles/redoc.standalone.js > $(VENDOR)/redoc/redoc.standalone.js
	! grep -q 'cdn.redoc.ly' $(VENDOR)/redoc/redoc.standalone.js
	@touch $@

run: venv
	$(BIN)/medrobotics up --seed-if-empty

test: venv
	$(BIN)/python -m pytest

# The dashboard in a real browser (Debian's chromium; .ci/browser.sh installs it).
browser-test: venv
	$(BIN)/python -m pytest tests/browser -m browser

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: venv
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENDOR) node_modules .medrobotics .work .pytest_cache .mypy_cache .ruff_cache
