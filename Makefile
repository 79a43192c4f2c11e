# Two commands for a fresh machine with Python 3.11+: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export ANOMALY_ASSETS_HOME ?= $(CURDIR)/.anomaly_home
export DAGSTER_HOME ?= $(ANOMALY_ASSETS_HOME)/dagster

.PHONY: install demo test dev mlflow serve clean bench explore

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install when the project's requirements change; constraints.txt pins the checked set.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/anomaly-assets demo

test: install
	$(BIN)/python -m pytest

dev: install
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || printf 'telemetry:\n  enabled: false\n' > $(DAGSTER_HOME)/dagster.yaml
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/dg dev

mlflow: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(ANOMALY_ASSETS_HOME)/mlflow/mlflow.db --port 5000

# MLflow's own scoring server on the champion (online scoring; it starts uvicorn by name, hence PATH).
SERVE_PORT ?= 5001
serve: install
	PATH=$(abspath $(BIN)):$$PATH MLFLOW_TRACKING_URI=sqlite:///$(ANOMALY_ASSETS_HOME)/mlflow/mlflow.db \
		$(BIN)/mlflow models serve -m models:/fleet_anomaly_detector@champion --env-manager local --host 127.0.0.1 --port $(SERVE_PORT)

clean:
	rm -rf $(ANOMALY_ASSETS_HOME)

bench: install
	$(BIN)/anomaly-assets bench

explore: install
	$(BIN)/anomaly-assets explore
