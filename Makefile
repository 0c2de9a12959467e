# Two commands on a fresh machine: `make run` (the demo on the embedded broker) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: install run test bench clean labelstudio browser prometheus

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Label Studio for the interop tests, in its own venv so its pins never touch ours.
LS_VENV ?= .venv-labelstudio
LS_STAMP = $(LS_VENV)/.installed

$(LS_STAMP): constraints-labelstudio.txt
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet -c constraints-labelstudio.txt label-studio
	touch $(LS_STAMP)

labelstudio: $(LS_STAMP)

# The labeling page's browser test drives Debian's Chromium (Playwright never downloads a browser).
browser:
	@[ -x /usr/bin/chromium ] || { sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -q && $$sudo apt-get install -y -q --no-install-recommends chromium; }

# The monitoring test scrapes a running loop with Debian's Prometheus and checks with its promtool.
prometheus:
	@{ [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || { sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -q && $$sudo apt-get install -y -q --no-install-recommends prometheus; }

run: install
	@echo "to label the demo yourself in the browser: make run ARGS='--labelers people' (URL and token printed below)"
	$(BIN)/activestream run $(ARGS)

test: install labelstudio browser prometheus
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf var
