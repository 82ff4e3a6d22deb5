# make demo: fresh venv, install what the demo needs (no engine), run the demo sweeps, write their report.
# make test: fresh venv, install with test extras and the engine (llama.cpp), lint, run the tests (one worker per core).
# make engine: the engine sweep (llama.cpp on the TinyLlama-1.1B shape in eight weight types) and its report.
# make quality: the real SmolLM2-135M requantized into llama-quantize's types, scored on real text with its speed, and its report.
# make tools: llama.cpp's llama-server, llama-bench, llama-perplexity and llama-batched-bench, built once per engine version
#   from its sdist (about 8 to 12 minutes on 2 cores, no AMX kernels, nothing downloaded but the sdist), in the cache outside the repo.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BASE   := $(VENV)/.installed-base
STAMP  := $(VENV)/.installed
# llama.cpp's AMX matrix kernels crash on CPUs that have AMX (a segfault in ggml_backend_amx_mul_mat,
# llama.cpp issue 20824, unfixed upstream), so llama-cpp-python is built without them. pip caches a
# built wheel by its source alone: a wheel built earlier with them is dropped from the cache, once.
LLAMA_CMAKE := CMAKE_ARGS="-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8 $$CMAKE_ARGS"
NO_AMX := $(PY) -c "import llama_cpp, sys; sys.exit('AMX_INT8 = 1' in llama_cpp.llama_print_system_info().decode())"

.PHONY: demo test engine quality tools lint bench clean

$(BASE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing infer-sweep and its dependencies into $(VENV) (about a minute)"
	$(PY) -m pip install --quiet -e .
	touch $(BASE)

$(STAMP): $(BASE)
	$(PY) -m pip install --quiet -e '.[test]'
	@$(PY) -c "import llama_cpp" 2>/dev/null || echo "building llama.cpp from source for llama-cpp-python (the [engine] \
	extra, without AMX kernels): about 10 to 17 minutes on 2 cores the first time; pip caches the wheel, so a \
	reinstall takes seconds"
	$(LLAMA_CMAKE) $(PY) -m pip install -e '.[engine]'
	$(NO_AMX) || { $(PY) -m pip cache remove llama_cpp_python && $(LLAMA_CMAKE) $(PY) -m pip install --quiet \
		--force-reinstall --no-deps "llama-cpp-python==$$($(PY) -c 'import llama_cpp; print(llama_cpp.__version__)')" \
		&& $(NO_AMX); }
	touch $(STAMP)

demo: $(BASE)
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

quality: $(STAMP)
	dir=outputs/sweeps/quality-$$(date +%Y-%m-%d_%H-%M-%S); status=0; \
	$(PY) experiments/run.py sweep=quality_formats hydra.sweep.dir=$$dir/quality_formats || status=1; \
	$(PY) experiments/report.py $$dir || exit 1; exit $$status

tools: $(STAMP)
	$(PY) -m experiments.shared.tools_build

test: $(STAMP) tools
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n auto --dist loadfile

bench: $(STAMP) tools
	status=0; for b in benchmarks/bench_*.py; do $(PY) $$b || status=1; done; exit $$status

clean:
	rm -rf $(VENV) outputs/runs outputs/sweeps
