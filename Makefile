# sipwarden: two commands for a newcomer - `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# A stamp per extra set, so every target is idempotent and re-installs only when pyproject changes.
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: demo test lint typecheck unit bench bench-analyze bench-gateway golden-update fuzz clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_RUN)

$(STAMP_BENCH): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

# The main job on bundled data: analyze the bundled attack capture, then parse the bundled
# messages (exit 1 = the message is invalid, which the scanner sample is on purpose; any other
# status fails the target).
demo: $(STAMP_RUN)
	$(BIN)/sipwarden analyze examples/captures/sipvicious-svmap-lbnl.pcap
	@for f in examples/messages/*.sip; do \
	  $(BIN)/sipwarden parse --format text "$$f"; rc=$$?; echo; \
	  if [ $$rc -gt 1 ]; then exit $$rc; fi; \
	done

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz

typecheck: $(STAMP_DEV)
	$(BIN)/mypy

unit: $(STAMP_DEV)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(STAMP_BENCH)
	$(PY) bench/parse.py

# analyze vs tshark on a generated 1M-message capture, and a 1M-source hostile key space
# (several minutes; captures cached in bench/out/).
bench-analyze: $(STAMP_RUN)
	$(PY) bench/analyze.py

# The inline firewall against Kamailio + sanity + pike on the same load, pinned to one core each
# (needs Debian's kamailio; about 3 minutes; BENCH_ARGS=--quick for a 30 s smoke run).
bench-gateway: $(STAMP_RUN)
	$(PY) bench/gateway.py $(BENCH_ARGS)

# Rewrite the golden snapshots after an intended change in what the detectors find; review
# `git diff tests/golden` before committing.
golden-update: $(STAMP_DEV)
	SIPWARDEN_UPDATE_GOLDEN=1 $(BIN)/pytest -q tests/golden

fuzz: $(STAMP_DEV)
	$(PY) -m pip install --quiet -e '.[fuzz]'
	$(PY) fuzz/fuzz_parse.py fuzz/seeds -max_total_time=$${FUZZ_SECONDS:-60}

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
