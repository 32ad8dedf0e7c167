# The README's two commands, `make book` and `make test`, and the small targets
# they are built from. Everything runs from a virtual environment in .venv.
#
#   make book                 build the book into _build/html (executes the chapters),
#                             its Chinese edition into _build/html/zh (from the cache)
#   make test                 build the book, then run the tests
#   make check                the tests that do not need the built book (nor a fresh
#                             venv to install into), without building it
#   make lab                  open the chapters as notebooks in JupyterLab
#   make clean                remove the build and caches (keeps .venv)
#   make distclean            also remove .venv
#
#   PYTHON=python3.12 make test     use another interpreter for .venv (3.11 or newer)
#   NGXLAB_STRICT=1 make test       a test whose tool is missing fails instead of skipping
#   PYTEST_ARGS="-k channel" make test

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
JB := $(VENV)/bin/jupyter-book
BUILD := _build
PYTEST_ARGS ?=
# How many chapters execute at a time (tools/execute_chapters.py): three on
# two cores, as the chapters spend much of their time waiting on their forks.
BOOK_JOBS ?= 3

SHELL := /bin/bash

.PHONY: all book test check lab venv clean distclean

# What `make check` leaves out: the tests that look at the built book
# (_build/html), and the one that installs ngxlab with pip into a fresh venv.
BOOK_TESTS := tests/test_00_after_build.py tests/test_zh_after_build.py tests/test_zh_figures_built.py \
	tests/test_browser.py \
	tests/test_install.py

# What the chapters run: the hash of ngxlab's code with docstrings and comments
# left out (its ast), of its C sources and data files, and of what the
# chapters' show_source cells show (which functions each chapter shows, and
# their code as shown, docstrings included: that is a cell's output). Any
# other docstring changes no output, so it re-executes nothing; Sphinx still
# re-reads the pages it shows on (see `book`). Only book/*.md is read: the
# Chinese pages (book/zh) have the same code cells, so the same show_source
# calls, and are never executed (see `book`).
define LIBHASH_PY
import ast, hashlib, pathlib, re, sys
h = hashlib.sha256()
for p in sorted(pathlib.Path("ngxlab").rglob("*")):
    if "__pycache__" in p.parts or not p.is_file():
        continue
    if p.suffix == ".py":
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr)                     and isinstance(getattr(body[0], "value", None), ast.Constant)                     and isinstance(body[0].value.value, str):
                body[0] = ast.Pass()
        data = ast.dump(tree).encode()
    elif p.suffix in (".c", ".h") or "data" in p.parts:
        data = p.read_bytes()
    else:
        continue
    h.update(str(p).encode() + b"\0" + data + b"\0")
sys.path.insert(0, ".")
from ngxlab.lab.notebook import show_source, source_calls
for md in sorted(pathlib.Path("book").glob("*.md")):
    for name, kwargs in source_calls(md.read_text()):
        h.update(repr((md.name, name, sorted(kwargs.items()))).encode())
        try:
            h.update(show_source(name, **kwargs).code.encode())
        except Exception as e:
            h.update(repr(e).encode())
print(h.hexdigest())
endef
export LIBHASH_PY

all: book

# The environment. The stamp holds a hash of requirements.txt, pyproject.toml
# and the interpreter's version, so a second run installs nothing; a .venv made
# by another interpreter than $(PYTHON) is made anew.
venv:
	@set -euo pipefail; \
	want=$$($(PYTHON) -c 'import sys; print(sys.version)'); \
	if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print(sys.version)' 2>/dev/null)" != "$$want" ]; then \
	    echo "== $(VENV) was made by another Python: making it anew with $(PYTHON)"; \
	    rm -rf $(VENV); \
	fi; \
	if [ ! -x $(PY) ]; then \
	    echo "== creating $(VENV) with $(PYTHON) ($$($(PYTHON) -c 'import platform; print(platform.python_version())'))"; \
	    $(PYTHON) -m venv $(VENV); \
	fi; \
	hash=$$( { cat requirements.txt pyproject.toml; echo "$$want"; } | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $(VENV)/.ngxlab-installed 2>/dev/null)" != "$$hash" ]; then \
	    echo "== installing requirements.txt and ngxlab (editable) into $(VENV)"; \
	    $(PY) -m pip install --disable-pip-version-check -q -r requirements.txt; \
	    $(PY) -m pip install --disable-pip-version-check -q -e .; \
	    echo "$$hash" > $(VENV)/.ngxlab-installed; \
	fi

# The book. Jupyter Book's execution cache keys only on a notebook's code
# cells, and Sphinx re-reads only the pages whose source changed, so a change
# to ngxlab alone would leave stale outputs in the pages. The build is also
# keyed on two hashes, kept in $(BUILD): when what the chapters run changes
# (LIBHASH_PY above), the execution cache is removed and every chapter runs
# again; when any file of ngxlab changes (a docstring too: the API page and
# the included code show them), Sphinx's doctrees are removed and every page
# is read again, from the cache. The chapters not in the cache are executed
# first, $(BOOK_JOBS) at a time (tools/execute_chapters.py: Jupyter Book runs them
# one by one, each mostly waiting on its own forks); one that fails there is
# executed again by the build, which reports it. NGXLAB_BOOK=1 tells the
# chapters' glue() that the build puts the values into the prose
# (ngxlab.lab.notebook.glue). ngxlab's modules are compiled first
# (compileall writes .pyc files even where PYTHONDONTWRITEBYTECODE is set),
# as an installed package's are: otherwise every kernel, and every `python
# -m ngxlab` a chapter starts, compiles them from source again.
#
# Then the Chinese edition: book/zh/*.md, whose code cells are the English
# pages' cell for cell, so every one of them is in the cache already. That
# is checked first (execute_chapters.py --cached-only): a Chinese page is
# never executed, neither a second time nor in book/zh. It is built with the
# configuration tools/zh_edition.py writes from _config.yml, into
# $(BUILD)/zh, and copied into $(BUILD)/html/zh beside the English pages.
book: venv
	@set -uo pipefail; \
	start=$$(date +%s); \
	mkdir -p $(BUILD); \
	libhash=$$($(PY) -c "$$LIBHASH_PY"); \
	srchash=$$(find ngxlab -type f -not -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z \
	           | xargs -0 -r sha256sum | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $(BUILD)/.ngxlab-hash 2>/dev/null)" != "$$libhash" ]; then \
	    if [ -d $(BUILD)/.jupyter_cache ]; then echo "== ngxlab's code changed: every chapter runs again"; fi; \
	    rm -rf $(BUILD)/.jupyter_cache $(BUILD)/.doctrees $(BUILD)/jupyter_execute \
	           $(BUILD)/zh/_build/.doctrees $(BUILD)/zh/_build/jupyter_execute; \
	    echo "$$libhash" > $(BUILD)/.ngxlab-hash; \
	fi; \
	if [ "$$(cat $(BUILD)/.ngxlab-srchash 2>/dev/null)" != "$$srchash" ]; then \
	    rm -rf $(BUILD)/.doctrees $(BUILD)/zh/_build/.doctrees; \
	    echo "$$srchash" > $(BUILD)/.ngxlab-srchash; \
	fi; \
	export NGXLAB_BOOK=1; \
	$(PY) -m compileall -q ngxlab || exit $$?; \
	$(PY) tools/execute_chapters.py --jobs $(BOOK_JOBS) $(BUILD)/.jupyter_cache book/*.md || exit $$?; \
	zhlog=$(BUILD)/zh-build.log; zhpid=; zrc=1; rm -f $(BUILD)/zh-seconds; \
	zh_build() { \
	    zhstart=$$(date +%s); \
	    zhconf=$$($(PY) tools/zh_edition.py $(BUILD)/zh) \
	    && $(JB) build book/zh --config "$$zhconf" --toc $(CURDIR)/book/zh/_toc.yml \
	                --path-output $(BUILD)/zh -W -n --keep-going; zb=$$?; \
	    echo "$$(( $$(date +%s) - zhstart ))" > $(BUILD)/zh-seconds; \
	    return $$zb; \
	}; \
	if $(PY) tools/execute_chapters.py --cached-only $(BUILD)/.jupyter_cache book/zh/*.md \
	        >$$zhlog 2>&1; then \
	    echo "== the Chinese edition (book/zh), from the execution cache, built beside the English one (its log follows the English build's)"; \
	    zh_build >>$$zhlog 2>&1 & zhpid=$$!; \
	fi; \
	$(JB) build . -W -n --keep-going; rc=$$?; \
	if [ $$rc -ne 0 ] && compgen -G '$(BUILD)/html/reports/*' >/dev/null; then \
	    for f in $(BUILD)/html/reports/*; do echo "== $$f"; tail -n 60 "$$f"; done; \
	fi; \
	if [ -n "$$zhpid" ]; then \
	    wait $$zhpid; zrc=$$?; \
	    echo "== the Chinese edition's build"; cat $$zhlog; \
	else \
	    echo "== the Chinese edition (book/zh), from the execution cache"; \
	    if $(PY) tools/execute_chapters.py --cached-only $(BUILD)/.jupyter_cache book/zh/*.md; then \
	        zh_build; zrc=$$?; \
	    else \
	        echo "== the Chinese edition is not built: a page above is not in the execution cache"; \
	    fi; \
	fi; \
	if [ $$zrc -ne 0 ] && compgen -G '$(BUILD)/zh/_build/html/reports/*' >/dev/null; then \
	    for f in $(BUILD)/zh/_build/html/reports/*; do echo "== $$f"; tail -n 60 "$$f"; done; \
	fi; \
	rm -rf $(BUILD)/html/zh; \
	if [ -d $(BUILD)/html ] && [ -d $(BUILD)/zh/_build/html ]; then \
	    cp -a $(BUILD)/zh/_build/html $(BUILD)/html/zh; \
	fi; \
	end=$$(date +%s); \
	echo "== book build took $$(( end - start )) s (the Chinese edition's own build $$(cat $(BUILD)/zh-seconds 2>/dev/null || echo -) s; exit $$rc, Chinese $$zrc)"; \
	if [ $$rc -eq 0 ]; then rc=$$zrc; fi; \
	exit $$rc

test: book
	$(PY) -m pytest $(PYTEST_ARGS)

check: venv
	$(PY) -m pytest $(addprefix --ignore=,$(BOOK_TESTS)) $(PYTEST_ARGS)

# JupyterLab on 127.0.0.1, with Markdown files opened as notebooks through
# jupytext (the setting lives in .venv, not in your home directory).
lab: venv
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@echo '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook"}}}' \
	    > $(VENV)/share/jupyter/lab/settings/overrides.json
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=. \
	    $(if $(filter 0,$(shell id -u)),--allow-root) --LabApp.default_url=/lab/tree/book/intro.md

clean:
	rm -rf $(BUILD) .pytest_cache bench-out
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info build
