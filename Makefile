# Setup and entry points. Every target creates the virtualenv it needs from the pinned files.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__API__HOST := 127.0.0.1
export PYTHONPATH := $(CURDIR):$(CURDIR)/plugins
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DEEPEVAL_TELEMETRY_OPT_OUT := 1
export DEEPEVAL_DISABLE_DOTENV := 1
export DEEPEVAL_FILE_SYSTEM := READ_ONLY

JUDGE_POOL := langfuse_eval_judge
JUDGE_POOL_SLOTS ?= 4
LANGFUSE_POOL := langfuse_eval_api
LANGFUSE_POOL_SLOTS ?= 8

.PHONY: venv airflow-init demo test lint bench run clean

# The editable install of this project registers its Airflow provider entry point. It builds
# with the setuptools of the venv, so it needs no download.
$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# Metadata database and the pools that cap judge and Langfuse API tasks across the deployment.
airflow-init: venv
	$(BIN)/airflow db migrate > /dev/null
	$(BIN)/airflow pools set $(JUDGE_POOL) $(JUDGE_POOL_SLOTS) "Judge tasks of langfuse_external_eval" > /dev/null
	$(BIN)/airflow pools set $(LANGFUSE_POOL) $(LANGFUSE_POOL_SLOTS) "Langfuse API tasks of langfuse_external_eval" > /dev/null

demo: airflow-init
	$(BIN)/python -m stack.demo

test: venv
	$(BIN)/python -m pytest

# Throughput benchmark on the local stack; results go to BENCHMARKS.md.
bench: venv
	$(BIN)/python -m bench.run --traces 2000 --latency-ms 200 --rpm 5000 --baseline-sample 40 \
		--page-size 50 --judge-concurrency 16 --traces-for dag-test=500 --traces-for scheduler=50 \
		--scale-sizes 10000 100000

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Against real Langfuse and OpenAI: set AIRFLOW_CONN_LANGFUSE_DEFAULT and
# AIRFLOW_CONN_OPENAI_DEFAULT first. RUN_AFTER picks the run (default: now), whose window is
# the last complete 05:00-to-05:00 window before it.
run: airflow-init
	@test -n "$$AIRFLOW_CONN_LANGFUSE_DEFAULT" || (echo "Set AIRFLOW_CONN_LANGFUSE_DEFAULT first." && exit 2)
	@test -n "$$AIRFLOW_CONN_OPENAI_DEFAULT" || (echo "Set AIRFLOW_CONN_OPENAI_DEFAULT first." && exit 2)
	$(BIN)/airflow dags test langfuse_external_eval $${RUN_AFTER:-$$(date -u +%Y-%m-%dT%H:%M:%S+00:00)}

clean:
	rm -rf .airflow .demo .stack
