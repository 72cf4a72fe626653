# One-command build and test. Needs Python 3.11 (python3.11 on PATH, or PYTHON=...).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
# nbgrader calls `alembic` through PATH; keep the environment's tools first.
export PATH := $(BIN):$(PATH)
# Offline always: nothing is fetched from a model or data hub at run time.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# Two pytest workers on two cores: one thread each, or OpenMP oversubscription slows training cells many times.
export OMP_NUM_THREADS := 1
JOBS ?= 2
ASSIGNMENTS := $(notdir $(wildcard solutions/ex*))

.PHONY: help env sandbox browser book test test-lib test-book test-solutions lab exercises grade constraints clean \
        bench bench-course

help:
	@echo "make book        build the HTML book into _build/html (creates .venv first)"
	@echo "make test        run every test: library, nbgrader end to end, notebooks under nbval"
	@echo "make lab         JupyterLab on exercises/ (nbgrader's Validate button included)"
	@echo "make exercises   regenerate exercises/ from solutions/ with nbgrader"
	@echo "make grade ASSIGNMENT=ex02_self_attention SUBMISSIONS=path/to/folder   grade a class"

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e .
	@touch $(STAMP)

env: $(STAMP)

# The grader's sandbox (bubblewrap). Installed with apt when possible; without it grading still works, unsandboxed.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; } || true; \
	  fi; \
	  command -v bwrap >/dev/null 2>&1 || echo "note: bubblewrap is not installed: the grader will run submissions unsandboxed"; }

# The browser test (tests/book/test_browser.py) reads the built book in Debian's Chromium, with a CJK font so that
# Chinese text has glyphs. Installed with apt as root when missing. Under `make test` the test fails (never skips)
# when either is missing, and says why.
browser:
	@missing=""; \
	  command -v chromium >/dev/null 2>&1 || missing="chromium"; \
	  fc-list :lang=zh family 2>/dev/null | grep -q . || missing="$$missing fonts-wqy-microhei"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing for the browser test: $$missing"; \
	      export DEBIAN_FRONTEND=noninteractive; \
	      apt-get install -y -qq $$missing >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && \
	        apt-get install -y -qq $$missing >/dev/null 2>&1; } || true; \
	    fi; \
	    command -v chromium >/dev/null 2>&1 || echo "note: Chromium is not installed (as root: apt-get install chromium): the browser test will fail"; \
	    fc-list :lang=zh family 2>/dev/null | grep -q . || echo "note: no CJK font is installed (as root: apt-get install fonts-wqy-microhei): the browser test will fail"; \
	  fi; true

book: env
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "Book: $(abspath _build/html/index.html)"

# The browser test must run here: without Chromium it fails instead of skipping.
test: export COURSE_REQUIRE_BROWSER := 1
test: env sandbox browser
	$(BIN)/python -m pytest -n $(JOBS) tests
	$(MAKE) --no-print-directory test-book test-solutions

test-lib: env
	$(BIN)/python -m pytest -n $(JOBS) tests

# Book chapters: every stored output is compared (timings and addresses sanitised).
test-book: env
	$(BIN)/python -m pytest -n $(JOBS) --dist loadscope --nbval \
	    --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-current-env book

# Solution notebooks: every cell must run; only cells marked NBVAL_CHECK_OUTPUT are compared.
test-solutions: env
	$(BIN)/python -m pytest -n $(JOBS) --dist loadscope --nbval-lax --nbval-current-env solutions

# Benchmarks (bench/README.md): a CSV table, a plot and the ratios per benchmark under bench/results/<name>/.
# `make bench` runs the default ones (attention, training, grading) on the CPU, then on CUDA too when a GPU is there;
# `make bench-course` times the book build, every notebook re-executed and `make test` (long: opt-in).
# Extra arguments: make bench BENCH_ARGS="--size full --rounds 11"
BENCH_ARGS ?=
bench: env
	$(BIN)/python bench/run.py --device auto $(BENCH_ARGS)

bench-course: env
	$(BIN)/python bench/run.py course $(BENCH_ARGS)

# nbgrader's lab extensions (the Validate button among them) are installed and enabled with the package.
lab: env
	$(BIN)/jupyter lab --ServerApp.root_dir=exercises

exercises: env
	@for a in $(ASSIGNMENTS); do \
	    $(BIN)/python -m nbgrader generate_assignment $$a --force --log-level=WARN || exit 1; \
	done
	@rm -f gradebook.db

grade: env sandbox
	@test -n "$(ASSIGNMENT)" -a -n "$(SUBMISSIONS)" || { echo "usage: make grade ASSIGNMENT=name SUBMISSIONS=folder"; exit 2; }
	$(BIN)/course grade $(ASSIGNMENT) $(SUBMISSIONS) --jobs $(JOBS)

constraints: env
	(echo "# Generated by 'make constraints' (pip freeze of a working environment)."; \
	 $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==.*/torch==2.13.0/') > constraints.txt

clean:
	rm -rf _build gradebook.db submitted autograded feedback
