# The two commands: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= postwarden.toml

.PHONY: run test lint venv clean

$(BIN)/postwarden: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/postwarden

run: venv
	@test -f $(CONFIG) || $(BIN)/postwarden -c $(CONFIG) init --hostname mail.example.test --domain example.test --demo-user
	@echo "Demo login: demo@example.test / demo-password (see README.md, 'Try it')"
	$(BIN)/postwarden -c $(CONFIG) serve

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: venv lint
	$(BIN)/pytest --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
