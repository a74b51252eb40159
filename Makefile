# difforge: `make demo` runs the main job, `make test` the tests; both set up .venv from nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.difforge-installed
# A plain `torch` request pulls a multi-GB CUDA build; this CPU wheel is what CI and dev use.
TORCH_PIN ?= torch==2.13.0
DEMO_DIR ?= demo-artifact

.PHONY: venv demo test lint bench clean browser reference

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]" "$(TORCH_PIN)"
	# Triton kernels are tested on CPU through its interpreter; --no-deps keeps the CPU torch.
	$(PY) -m pip install -q --no-deps triton==3.9.0
	@touch $(STAMP)

venv: $(STAMP)

# The trained digits U-Net (models/digits-unet): compile, describe, a 3x10 grid of digits by
# class, then the engine against PyTorch (PSNR/SSIM) and the judge's accuracy/FD.
demo: venv
	$(VENV)/bin/difforge compile --model models/digits-unet -o $(DEMO_DIR) --max-batch 10 --force
	$(VENV)/bin/difforge info $(DEMO_DIR)
	$(VENV)/bin/difforge run $(DEMO_DIR) --classes 0-9,0-9,0-9 --seed 0 --out demo.png
	$(VENV)/bin/difforge eval $(DEMO_DIR) --images 4 --quality-samples 1000

lint: venv
	$(VENV)/bin/ruff check difforge tests scripts
	$(VENV)/bin/mypy difforge

# The report test screenshots report.html in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "warning: chromium could not be installed; the report screenshot test will skip (or fail under CI)"

# Two workers, each module's tests on one worker (its fixtures built once); the session's
# shared artifacts are built once per worker.
PYTEST_WORKERS ?= 2
test: venv lint browser
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=25

# Retrains every digits reference model from scratch, seeded (judge, teachers, students,
# LinFusion and CLEAR distillations): about half an hour on 2 cores. CI does not run it.
reference: venv
	$(PY) scripts/make_reference.py

bench: venv
	$(PY) scripts/bench.py --out docs/perf.md

clean:
	rm -rf $(DEMO_DIR) demo.png .pytest_cache .mypy_cache .ruff_cache
