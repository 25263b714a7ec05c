# The two commands: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= postwarden.toml

.PHONY: run test lint venv clean install

# Serving needs only the package; the test tools come with `make test`.
$(BIN)/postwarden: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/pytest: $(BIN)/postwarden
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/pytest

run: $(BIN)/postwarden
	@test -f $(CONFIG) || $(BIN)/postwarden -c $(CONFIG) init --hostname mail.example.test --domain example.test --demo-user
	@echo "Demo login: demo@example.test / demo-password (see README.md, 'Try it')"
	@echo "The postwarden command: $(abspath $(BIN)/postwarden)"
	$(BIN)/postwarden -c $(CONFIG) serve

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The openspf RFC 7208 suite is third-party data, so it is not in the repository:
# it is taken from pyspf's source distribution on PyPI, like any test dependency.
SPF_SUITE := $(VENV)/spf-suite/rfc7208-tests.yml
$(SPF_SUITE): | $(BIN)/pytest
	rm -rf $(VENV)/spf-suite && mkdir -p $(VENV)/spf-suite
	$(BIN)/pip download -q --no-deps --no-binary :all: pyspf==2.0.14 -d $(VENV)/spf-suite
	tar -xzf $(VENV)/spf-suite/pyspf-2.0.14.tar.gz -C $(VENV)/spf-suite --strip-components=2 pyspf-2.0.14/test/rfc7208-tests.yml

# Two test processes (pytest-xdist), a file each at a time: most tests wait on
# servers, sockets and fsync, so two cores run the suite in about half the time.
# A file stays on one process, so a module's server fixture starts once; files
# are handed out in collection order (tests/conftest.py puts the long ones first).
TEST_PROCESSES ?= 2
test: venv lint $(SPF_SUITE)
	SPF_SUITE_YAML=$(abspath $(SPF_SUITE)) $(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder \
		--cov --cov-report=term:skip-covered $(PYTEST_ARGS)

# A system install (as root): its own venv, `postwarden` on PATH, the systemd unit.
# README.md, "Install as a service", has the steps around it.
INSTALL_DIR ?= /opt/postwarden
BINDIR ?= /usr/local/bin
UNITDIR ?= /etc/systemd/system
install:
	$(PY) -m venv $(INSTALL_DIR)
	$(INSTALL_DIR)/bin/pip install -q .
	install -d $(BINDIR) $(UNITDIR)
	ln -sf $(INSTALL_DIR)/bin/postwarden $(BINDIR)/postwarden
	sed 's#/usr/local/bin/postwarden#$(BINDIR)/postwarden#' contrib/postwarden.service \
		> $(UNITDIR)/postwarden.service
	@echo "installed $(BINDIR)/postwarden and $(UNITDIR)/postwarden.service"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
