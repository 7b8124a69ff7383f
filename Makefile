# `make demo` and `make test` each bring up .venv on first use; later runs skip the install
# (the stamp is newer than pyproject.toml), so they start in seconds.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medgrid-installed

.PHONY: demo test test-fast install lint clean cluster-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "== installing medgrid and its packages (Ray, MLflow, torch CPU, Optuna ...) into $(VENV):"
	@echo "== about two minutes on the first run; later runs skip this step"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The tests that need no Ray and no MLflow server (marker `fast`): seconds, for every edit.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m fast

# The hw1 grid on the docker-compose cluster (needs a Docker engine and a filled-in .env):
# PostgreSQL + MLflow + a Ray head + $(WORKERS) workers; the driver runs on the head. Shortened
# on synthetic data by default; CLUSTER_ARGS= runs the full grid on OCTMNIST.
WORKERS ?= 2
CLUSTER_ARGS ?= --dataset synthetic --epochs 3 --limit-train 5000
cluster-demo:
	@test -f .env || { echo "cluster-demo: copy .env.example to .env and set its secrets" >&2; exit 2; }
	docker compose up --build --detach --wait --scale ray-worker=$(WORKERS)
	docker compose exec ray-head medgrid tune search_spaces/hw1.yaml --ray-address ray-head:6379 \
		--tracking-uri http://mlflow:5000 --storage /shared/ray_results $(CLUSTER_ARGS)
	docker compose exec ray-head medgrid report --tracking-uri http://mlflow:5000 \
		--out /shared/ray_results/report
	@echo "runs: http://127.0.0.1:5000 (user and password from .env); stop: docker compose down"

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests bench

# Everything medgrid and its commands generate here (runs, results, reports, data it made);
# nothing else. mlruns/ keeps its .gitkeep.
clean:
	rm -rf $(VENV) ray_results demo_out demo_report report_out boolean_out data mlflow.db mlflow.db-*
	find mlruns -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
