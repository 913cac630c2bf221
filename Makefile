# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
# `make docs` builds the documentation site (docs/, mkdocs.yml) with --strict into site/.
VENV ?= .venv
PYTEST_ARGS ?=
comma := ,
# the docs extra on top of the extras asked for (default: test)
DOCS_EXTRAS = $(if $(findstring docs,$(VAELAB_EXTRAS)),$(VAELAB_EXTRAS),$(or $(VAELAB_EXTRAS),test)$(comma)docs)

.PHONY: setup demo test test-faults test-all docs bench clean
setup:
	@./scripts/setup.sh

demo: setup
	$(VENV)/bin/vaelab demo

test: setup
	@./scripts/ensure_chromium.sh
	$(VENV)/bin/python -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-faults: setup
	$(VENV)/bin/python -m pytest -m "faults and slow" -q $(PYTEST_ARGS)

test-all: setup
	@./scripts/ensure_chromium.sh
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

docs:
	@VAELAB_EXTRAS=$(DOCS_EXTRAS) VENV=$(VENV) ./scripts/setup.sh
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache site
