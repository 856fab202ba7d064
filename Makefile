# `make run`: the whole service on its embedded default, in the foreground (Ctrl-C stops it).
# `make test`: the whole test suite. See README.md.
.DEFAULT_GOAL := help
PY := .venv/bin/python

.PHONY: help run test lint demo clean

help:
	@echo "make run    start the API (:8000), a Celery worker, Celery beat and a registry (:5000)"
	@echo "make test   run the test suite"
	@echo "make demo   create a cluster with a hosted queue and print its agent environment"
	@echo "make lint   ruff, import layering, Django checks, migrations up to date"

.venv/.installed: requirements.txt
	@scripts/ensure-venv

run: .venv/.installed
	@scripts/ensure-docker-registry
	$(PY) manage.py migrate --noinput
	@mkdir -p var/registry
	@umask 077 && $(PY) manage.py registry_config > var/registry/config.yml
	.venv/bin/honcho -f deploy/Procfile.dev -d . start

test: .venv/.installed
	@scripts/ensure-docker-registry
	.venv/bin/pytest

lint: .venv/.installed
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

demo: .venv/.installed
	$(PY) manage.py demo

clean:
	rm -rf var
