# `make run`: the whole service on its embedded default, in the foreground (Ctrl-C stops it).
# `make test`: the whole test suite; `make test-fast`: without the integration tests. See README.md.
.DEFAULT_GOAL := help
PY := .venv/bin/python
# `honcho run` loads .env (if there is one) first, so every step sees the same settings.
WITH_ENV := .venv/bin/honcho run

.PHONY: help run test test-fast faults scale bench lint demo gc image clean

# The development stack's ports and local state. Another instance beside the first:
#   PORT=8100 REGISTRY_PORT=5100 CONTROLPLANE_VAR_DIR=/tmp/cp2 make run   (and make demo alike)
PORT ?= 8000
REGISTRY_PORT ?= 5000
CONTROLPLANE_VAR_DIR ?= var
override CONTROLPLANE_VAR_DIR := $(abspath $(CONTROLPLANE_VAR_DIR))
export CONTROLPLANE_VAR_DIR
# DEBUG is off unless DJANGO_DEBUG=true (controlplane/env.py): every target here is development.
export DJANGO_DEBUG ?= true
run demo gc: export WEB_PORT := $(PORT)
run demo gc: export REGISTRY_URL ?= http://127.0.0.1:$(REGISTRY_PORT)
run demo gc: export REGISTRY_TOKEN_REALM ?= http://127.0.0.1:$(PORT)/registry/token
# The registry posts its events to the API (docs/usage.md#registry-events); a development token.
run demo gc: export REGISTRY_NOTIFICATIONS_URL ?= http://127.0.0.1:$(PORT)/registry/notifications
run demo gc: export REGISTRY_NOTIFICATIONS_TOKEN ?= development-notifications-token
# The worker collects the registry's garbage on the configuration the registry runs on
# (docs/retention.md#garbage-collection).
run demo gc: export REGISTRY_GC_CONFIG ?= $(CONTROLPLANE_VAR_DIR)/registry/config.yml
# Development: pushes are refused 5 s (the hot caches' lifetime) before the window, not a minute.
run demo gc: export REGISTRY_GC_DRAIN_SECONDS ?= 5

help:
	@echo "make run    start the API (:8000), a Celery worker, Celery beat and a registry (:5000);"
	@echo "            PORT, REGISTRY_PORT and CONTROLPLANE_VAR_DIR (default var/) move them"
	@echo "make test   run the test suite"
	@echo "make test-fast  the tests that start no process, live server or browser (-m 'not integration')"
	@echo "make faults rerun the fault-injection scenarios (TRIALS=5 each) and write docs/fault-report.md"
	@echo "make scale  the fault run across replicas (TRIALS=3, CLUSTERS=200) and write docs/SCALE.md"
	@echo "make bench  measure the hot paths against bare baselines (ROUNDS=3) and write docs/PERFORMANCE.md"
	@echo "make demo   create a cluster with a hosted queue, then push and pull an image to its registry"
	@echo "make gc     collect the running registry's garbage now, in a read-only window, and verify it"
	@echo "make lint   ruff, import layering, mypy, Django checks, migrations up to date"
	@echo "make image  build the container image (deploy/README.md) into var/image/"

.venv/.installed: requirements.txt requirements-dev.txt
	@scripts/ensure-venv

# Debian packages: the registry for `make run`; the container clients for the tests and the demo;
# the browser the console's tests drive.
RUN_PACKAGES := docker-registry
CLIENT_PACKAGES := skopeo buildah podman busybox-static
# The image's Debian base is made with mmdebstrap; buildah builds on it (tests/deploy/test_image.py).
IMAGE_PACKAGES := mmdebstrap buildah
BROWSER_PACKAGES := chromium
# The fault-injection tests run a private PostgreSQL and Redis of their own (initdb, redis-server).
FAULT_PACKAGES := postgresql redis-server
TRIALS ?= 5
# `make scale`: two of everything behind nginx, faults mid-burst (tests/scale/); about 4 minutes a
# trial. Its own TRIALS default (3), not make faults' (5): `make scale TRIALS=5` still works.
SCALE_PACKAGES := nginx docker-registry skopeo postgresql redis-server
CLUSTERS ?= 200
# `make bench`: the registry, skopeo for P7 and wrk for the HTTP load; PostgreSQL and Redis are
# the host's (BENCH_POSTGRES_URL, BENCH_REDIS_URL: docs/PERFORMANCE.md, "Rerunning it").
BENCH_PACKAGES := docker-registry skopeo wrk
ROUNDS ?= 3

run: .venv/.installed
	@scripts/ensure-packages $(RUN_PACKAGES)
	$(WITH_ENV) $(PY) manage.py migrate --noinput
	@# after migrate: the signing keys live in the database (docs/registry-tokens.md)
	$(WITH_ENV) $(PY) manage.py registry_keys init
	@# private, also when an older checkout made it 0755
	@mkdir -p "$(CONTROLPLANE_VAR_DIR)/registry" && chmod 700 "$(CONTROLPLANE_VAR_DIR)"
	@# an earlier run's metrics files go (multiprocess mode: docs/operations.md, "Metrics")
	@rm -rf "$(CONTROLPLANE_VAR_DIR)/metrics"
	@$(WITH_ENV) $(PY) manage.py registry_config --output "$(CONTROLPLANE_VAR_DIR)/registry/config.yml"
	.venv/bin/honcho -f deploy/Procfile.dev -d . start

test: .venv/.installed
	@scripts/ensure-packages $(RUN_PACKAGES) $(CLIENT_PACKAGES) $(BROWSER_PACKAGES) $(FAULT_PACKAGES) \
		$(IMAGE_PACKAGES)
	.venv/bin/pytest

# The fast loop: no registry, worker, container client, subprocess, live server or browser
# (tests/support/integration.py); no Debian packages needed, SQLite by default.
test-fast: .venv/.installed
	.venv/bin/pytest -m "not integration"

# Each trial prints its line as it ends (-v); the figures land in docs/fault-report.md.
faults: .venv/.installed
	@scripts/ensure-packages $(RUN_PACKAGES) $(FAULT_PACKAGES)
	.venv/bin/pytest tests/faults -v -p no:cacheprovider --fault-trials $(TRIALS) \
		--fault-report docs/fault-report.md
	@echo "wrote docs/fault-report.md"

# The run is tests/scale/run_scale.py (named here only: `make test` never collects it); -s shows
# a line per phase of each trial as it goes.
scale: TRIALS = 3
scale: .venv/.installed
	@scripts/ensure-packages $(SCALE_PACKAGES)
	.venv/bin/pytest tests/scale/run_scale.py -v -s -p no:cacheprovider --scale-trials $(TRIALS) \
		--scale-clusters $(CLUSTERS) --scale-report docs/SCALE.md
	@echo "wrote docs/SCALE.md"

# About 10 minutes; the code is in bench/, the figures land in docs/PERFORMANCE.md.
bench: .venv/.installed
	@scripts/ensure-packages $(BENCH_PACKAGES)
	$(PY) -m bench --rounds $(ROUNDS) --output docs/PERFORMANCE.md

lint: .venv/.installed
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	.venv/bin/mypy
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

demo: .venv/.installed
	@scripts/ensure-packages $(CLIENT_PACKAGES)
	$(WITH_ENV) $(PY) manage.py demo --api-url http://127.0.0.1:$(PORT)

# A garbage collection of `make run`'s registry, here, printing its progress: pushes refused,
# the registry read-only, garbage-collect, read-write again, every kept tag verified
# (docs/retention.md#garbage-collection).
gc: .venv/.installed
	$(WITH_ENV) $(PY) manage.py registry_gc --wait

# The image, in a private buildah store under var/image/ and as a docker-archive beside it
# (podman load / docker load). Needs root, the Debian mirror and PyPI; nothing is pulled.
image:
	@scripts/ensure-packages $(IMAGE_PACKAGES)
	deploy/build-image --store var/image/store --output var/image/controlplane.tar

clean:
	rm -rf var
