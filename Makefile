# make demo: fresh venv, install, run the demo sweep, write its report.
# make test: fresh venv, install with test extras and the engine (llama.cpp), lint, run the tests.
# make engine: the engine sweep (llama.cpp on the TinyLlama-1.1B shape in eight weight types) and its report.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test engine lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test,engine]'
	touch $(STAMP)

demo: $(STAMP)
	dir=outputs/sweeps/demo-$$(date +%Y-%m-%d_%H-%M-%S); status=0; \
	$(PY) experiments/run.py experiment=machine bench.threads=1 hydra.run.dir=$$dir/machine_1_thread || status=1; \
	$(PY) experiments/run.py sweep=demo_kv hydra.sweep.dir=$$dir/kv_cache || status=1; \
	$(PY) experiments/run.py sweep=demo_quant hydra.sweep.dir=$$dir/quantization || status=1; \
	$(PY) experiments/run.py sweep=demo_matmul hydra.sweep.dir=$$dir/matmul || status=1; \
	$(PY) experiments/report.py $$dir || exit 1; exit $$status

engine: $(STAMP)
	dir=outputs/sweeps/engine-$$(date +%Y-%m-%d_%H-%M-%S); status=0; \
	$(PY) experiments/run.py sweep=engine_formats hydra.sweep.dir=$$dir/engine_formats || status=1; \
	$(PY) experiments/report.py $$dir || exit 1; exit $$status

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: $(STAMP)
	status=0; for b in benchmarks/bench_*.py; do $(PY) $$b || status=1; done; exit $$status

clean:
	rm -rf $(VENV) outputs/runs outputs/sweeps
