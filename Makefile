# The two commands of the README, plus helpers. Everything installs itself on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install run test soak chromium amtool unit integration lint bench kafka-start kafka-stop clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@true
	@touch $(STAMP)

install: $(STAMP)

## make run: local Kafka + embedded ClickHouse + worker + simulated feed (Ctrl-C stops all)
run: $(STAMP)
	$(BIN)/touchstream run $(ARGS)

## make test: lint, unit tests, then integration + fault tests on a real Kafka started by the tests
test: $(STAMP) chromium amtool
	$(BIN)/ruff check streams tests
	$(BIN)/python -m pytest tests $(ARGS)

## make soak: 30 min of steady live load on the real broker; RSS must plateau (on demand, not in CI)
soak: $(STAMP)
	TOUCHSTREAM_SOAK_MINUTES=$${TOUCHSTREAM_SOAK_MINUTES:-30} $(BIN)/python -m pytest tests/integration/test_soak.py -s $(ARGS)

# headless browser for tests/integration/test_board.py (Debian package; sudo when not root)
chromium:
	@command -v chromium >/dev/null || { S=; [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null || S=sudo; \
	  $$S apt-get update -qq && $$S apt-get install -y -qq chromium; }

# amtool checks deploy/alertmanager/alertmanager.yml (tests/unit/test_deploy_stack.py; Debian package)
amtool:
	@command -v amtool >/dev/null || { S=; [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null || S=sudo; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq --no-install-recommends \
	  prometheus-alertmanager; }

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(ARGS)

integration: $(STAMP) chromium
	$(BIN)/python -m pytest tests/integration $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check streams tests

bench: $(STAMP)
	$(BIN)/touchstream bench $(ARGS)

kafka-start: $(STAMP)
	$(BIN)/touchstream kafka start $(ARGS)

kafka-stop: $(STAMP)
	$(BIN)/touchstream kafka stop

clean:
	-$(BIN)/touchstream kafka stop
	rm -rf $(VENV) .touchstream .pytest_cache .ruff_cache
