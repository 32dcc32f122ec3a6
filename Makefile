# Two commands matter: `make serve` and `make test`. Everything else is a building block.
PYTHON ?= python3
VENV := .venv
SERVE_VENV := .venv-serve

.PHONY: serve test test-containers train-image setup setup-serve system-deps container-deps lint repro exps sweep sweep-cnn bench clean

## Set up the torch-free serving env (exactly what Dockerfile.serve installs) and serve models/model.onnx on :8000.
serve: $(SERVE_VENV)/.built
	@# A dvc repro or dvc exp run/apply in this checkout replaces the model: never serve that unannounced.
	@if [ -z "$$MODEL_PATH" ] && git rev-parse --is-inside-work-tree >/dev/null 2>&1 \
		&& ! git diff --quiet HEAD -- models/model.onnx; then \
		echo "make serve: WARNING: models/model.onnx is not the committed model (a dvc repro or dvc exp run/apply replaced it); serving it anyway. git checkout -- models/model.onnx restores the committed one" >&2; \
	fi
	$(SERVE_VENV)/bin/python -m service

## Set up every environment the suite needs, then lint and run the whole test suite:
## pytest, then the serve image and the compose stack on a local Docker engine.
test: setup setup-serve system-deps
	$(VENV)/bin/python -m ruff check .
	$(VENV)/bin/python -m ruff format --check .
	$(VENV)/bin/python -m pytest --ignore=tests/containers
	$(MAKE) test-containers

## Build the serve image and bring up the compose stack (api, prometheus, mlflow) on a private
## Docker engine that the tests start and stop; check them (tests/containers). The last step of `make test`.
test-containers: setup container-deps
	$(VENV)/bin/python -m pytest -s tests/containers --ignore=tests/containers/test_train_image.py

## Slow, not in CI: build the train image (torch from TORCH_INDEX_URL, PyTorch's CPU index by
## default) and run the DVC pipeline inside it on the mini archive with tiny params.
train-image: setup container-deps
	$(VENV)/bin/python -m pytest -s tests/containers/test_train_image.py

## Training + export + test tools (torch, dvc, mlflow, onnx, pytest, linters). torch comes from PyPI,
## which on Linux is the CUDA build (a 7.1 GB .venv); `make setup TORCH=cpu` takes PyTorch's CPU build.
setup: $(VENV)/.built

setup-serve: $(SERVE_VENV)/.built

## promtool and a real Prometheus for the monitoring checks (Debian package, needs root or sudo).
system-deps:
	bash scripts/ci-system-deps.sh

## Docker engine, docker-compose 1.29 and debootstrap for the container checks (Debian packages, root or sudo).
container-deps:
	bash scripts/ci-system-deps.sh containers

# TORCH=cpu: torch and torchvision at train.txt's pins from PyTorch's CPU wheel index, as
# Dockerfile.train installs them; unset: from PyPI with the rest, CUDA libraries and all.
TORCH ?=
TORCH_CPU_INDEX_URL := https://download.pytorch.org/whl/cpu
ifneq ($(filter-out cpu,$(TORCH)),)
$(error TORCH=$(TORCH) is not a torch build; use TORCH=cpu (PyTorch's CPU index) or leave TORCH unset (PyPI))
endif

$(VENV)/.built: requirements/serve.txt requirements/train.txt requirements/dev.txt requirements/ops.txt \
		$(if $(TORCH),$(VENV)/.torch-$(TORCH))
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements/dev.txt
	touch $@

TORCH_CPU_FAILED := make setup TORCH=cpu: no CPU build of torch from $(TORCH_CPU_INDEX_URL) (unreachable, \
	or pip took a CUDA build from another index it is configured with); $(VENV) removed. Retry where that index is \
	reachable, or run make setup without TORCH=cpu for PyPI's CUDA build.

# From scratch: pip takes 2.14.1+cpu and 2.14.1 for the same pin, and never removes CUDA's packages.
# A short timeout and no retries: an unreachable index fails in seconds instead of pip's minutes of retries.
# Where the CPU index is unreachable, pip may take the CUDA build from another index it is configured with;
# either way the install stops with TORCH_CPU_FAILED and leaves no half-built venv.
$(VENV)/.torch-cpu: requirements/train.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --timeout 10 --retries 0 \
		--index-url $(TORCH_CPU_INDEX_URL) $$(grep -E '^(torch|torchvision)==' requirements/train.txt) \
	&& $(VENV)/bin/python -c 'import sys, torch; torch.version.cuda and sys.exit("got torch " \
		+ torch.__version__ + ", built for CUDA " + torch.version.cuda)' \
	|| { echo "$(TORCH_CPU_FAILED)" >&2; rm -rf $(VENV); exit 1; }
	touch $@

$(SERVE_VENV)/.built: requirements/serve.lock scripts/build_serve_venv.sh
	rm -rf $(SERVE_VENV)
	sh scripts/build_serve_venv.sh $(SERVE_VENV) $(PYTHON)
	touch $@

lint: setup
	$(VENV)/bin/python -m ruff check .
	$(VENV)/bin/python -m ruff format --check .

## Rebuild data, model, ONNX export and metrics from params.yaml.
repro: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

## Every DVC experiment at 120 columns: its name, test accuracy and the params it changed
## (`dvc exp show` has every column; this drops the dependency hashes and the other figures).
DVC ?= $(VENV)/bin/dvc
exps:
	@# Params are the dotted names (train.epochs), dependencies the paths; metrics and Created have neither.
	$(DVC) exp show --no-pager --only-changed --keep '^(Experiment|accuracy)$$' --drop '[^.]*$$|.*/'

## Serving size x int8 x pretrained/scratch on the test split, after `make repro` (docs/model.md).
sweep: setup
	$(VENV)/bin/python scripts/sweep_serving.py

## The from-scratch cnn's accuracy against training minutes (docs/model.md; hours of CPU).
sweep-cnn: setup
	$(VENV)/bin/python scripts/sweep.py

## Latency/throughput/memory of the real server vs a PyTorch-eager baseline; model-only cost.
bench: setup setup-serve
	$(VENV)/bin/python benchmarks/bench_service.py --torch --soak-seconds 60
	$(SERVE_VENV)/bin/python benchmarks/bench_model.py

## Mutation testing of the contract modules (mutmut; slow, so not part of `make test`): docs/testing.md.
MUTATION_SCOPE := 'service.preprocessing.*' 'service.limits.*' 'export.parity.*' 'export.export.x_main__mutmut_*' \
	'service.v2.x__split_body__mutmut_*' 'service.v2.x__parse__mutmut_*' 'service.v2.x__input_tensor__mutmut_*' \
	'service.v2.x__json_data__mutmut_*' 'service.v2.x__binary_data__mutmut_*' \
	'service.predict.x__read_single__mutmut_*' 'service.predict.x__read_many__mutmut_*' \
	'service.predict.x__media_type__mutmut_*' 'service.predict.x__decode__mutmut_*'
.PHONY: mutation
mutation: setup
	CATSDOGS_SHARED_DATA="$${CATSDOGS_SHARED_DATA:-$(abspath $(CURDIR)/../shared/data)}" \
		nice -n 19 $(VENV)/bin/mutmut run $(MUTATION_SCOPE)
	$(VENV)/bin/python scripts/mutation_report.py $(MUTATION_SCOPE)

clean:
	rm -rf $(VENV) $(SERVE_VENV) .pytest_cache .ruff_cache mutants
