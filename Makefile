# Two commands for newcomers: `make demo` and `make test`. Everything else is `.venv/bin/wangge ...`.
WANGGE := .venv/bin/wangge
PYTHON := .venv/bin/python

.PHONY: deps db demo lint test bench soak clean-db

deps:
	@scripts/deps.sh

db: deps
	@$(WANGGE) db start
	@$(WANGGE) db migrate

## Set everything up, load the demo district (its year ending now) and serve http://127.0.0.1:8000 with a
## live feed of synthetic incidents and responder pings beside it (WANGGE_SIMULATE=0 turns the feed off)
demo: db
	@$(WANGGE) fixtures load --network --renew-after 24
	@echo "Token for the demo admin (also in .wangge/demo-token):"
	@$(WANGGE) users demo-token
	@echo "Sign in: http://127.0.0.1:$${WANGGE_PORT:-8000}/login?next=/maps/incidents%3Farea%3D110102 as demo-admin, with that token as the password"
	@echo "API docs: http://127.0.0.1:$${WANGGE_PORT:-8000}/docs"
	@if [ "$${WANGGE_SIMULATE:-1}" != 0 ]; then \
	  $(WANGGE) simulate --wait & sim=$$!; trap 'kill $$sim 2>/dev/null; wait $$sim' EXIT INT TERM; \
	fi; \
	$(WANGGE) serve

## Lint (ruff) and types (mypy), configured in pyproject.toml
lint: deps
	@$(PYTHON) -m ruff check .
	@$(PYTHON) -m mypy

## Lint, types, and the whole test suite against a throwaway database on the real PostGIS
test:
	@scripts/deps.sh --browser
	@$(PYTHON) -m ruff check .
	@$(PYTHON) -m mypy
	@$(WANGGE) db start
	@$(PYTHON) -m pytest $(PYTEST_ARGS)

## Benchmarks side by side with raw PostGIS; writes bench/reports/latest.md
bench:
	@scripts/deps.sh --bench
	@$(WANGGE) db start
	@$(WANGGE) db migrate
	@$(PYTHON) -m bench

## Outside CI: the live feed at 20x its rate for 30 minutes (SOAK_MINUTES) against a served demo, with sign-ins
## and reads; 0 5xx, flat worker memory, stable p95 and no lost write, or it fails. Writes bench/reports/soak.md
soak:
	@scripts/deps.sh --bench
	@$(WANGGE) db start
	@$(PYTHON) -m bench.soak --minutes $${SOAK_MINUTES:-30}

clean-db:
	-@$(WANGGE) db stop
	rm -rf .wangge/pg .wangge/db-password
