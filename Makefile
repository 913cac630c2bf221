# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup demo test test-all bench clean
setup:
	@./scripts/setup.sh

demo: setup
	$(VENV)/bin/vaelab demo

test: setup
	@./scripts/ensure_chromium.sh
	$(VENV)/bin/python -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-all: setup
	@./scripts/ensure_chromium.sh
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
