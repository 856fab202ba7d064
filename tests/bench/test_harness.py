"""The bench's pieces keep working (``make bench`` itself runs outside the suite): the command
line, the bench settings and their bare view, the query counter, the stack's environment and
the report. Nothing here times anything or starts a process."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from django.test import Client, override_settings
from django.urls import Resolver404, resolve

from bench.__main__ import parse_arguments, selected
from bench.load import count_queries
from bench.measures import MODULES, Measure, Result, at_least, at_most
from bench.measures.http import MEASURES
from bench.report import Row, render
from bench.stack import Stack
from bench.views import BARE_BODY


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(["--help"])
    assert exit_info.value.code == 0
    assert "--rounds" in capsys.readouterr().out


def test_arguments() -> None:
    arguments = parse_arguments(["--rounds", "5", "--only", "P1,P5", "--output", "-"])
    assert arguments.rounds == 5
    assert str(arguments.output) == "-"
    wanted = ["P1", "P5"]
    chosen = [measure.id for measure in MEASURES if selected(measure, wanted)]
    assert chosen == ["P1", "P5 clusters", "P5 queues"]


def test_bench_settings_add_the_app_and_urls() -> None:
    bench_settings = importlib.import_module("bench.settings")
    assert "bench" in bench_settings.INSTALLED_APPS
    assert bench_settings.ROOT_URLCONF == "bench.urls"


def test_the_bare_view_exists_only_under_bench_urls() -> None:
    with pytest.raises(Resolver404):
        resolve("/bench/bare")
    with override_settings(ROOT_URLCONF="bench.urls"):
        response = Client().get("/bench/bare")
    assert response.status_code == 200
    assert response.json() == BARE_BODY


@pytest.mark.django_db
def test_the_query_counter_goes_through_the_wsgi_handler() -> None:
    with override_settings(ROOT_URLCONF="bench.urls"):
        found = count_queries("/bench/bare")
    assert found.status == 200
    assert found.statements == []
    assert str(found) == "0 SQL"


def test_measures_have_unique_ids() -> None:
    ids = [measure.id for measure in MEASURES]
    assert len(ids) == len(set(ids))
    assert all(isinstance(measure, Measure) for measure in MEASURES)
    assert MODULES[0] == "bench.measures.http"


def test_the_stack_environment_is_production_like(tmp_path: Path) -> None:
    stack = Stack(workdir=tmp_path, redis_url="redis://127.0.0.1:6379/15")
    assert stack.env["DJANGO_SETTINGS_MODULE"] == "bench.settings"
    assert stack.env["DJANGO_DEBUG"] == "false"
    assert stack.database.startswith("cp_bench_run_")
    assert stack.env["DATABASE_URL"].endswith(f"/{stack.database}")
    assert stack.env["REDIS_URL"] == stack.env["CELERY_BROKER_URL"] == stack.redis_url
    assert stack.env["REGISTRY_TOKEN_REALM"] == f"{stack.base_url}/registry/token"
    assert stack.gunicorn_pids() == []  # not started


def never_run(stack: Stack, rounds: int) -> Result:
    raise AssertionError("the report is rendered from given results")


def test_the_report_renders_a_table() -> None:
    passing = Measure("P1", "agent environment, warm", "≥ 0.8×", at_least(0.8), never_run)
    failing = Measure("P7", "push + pull", "≤ 1.1×", at_most(1.1), never_run)
    memory = Measure("P8 web", "RSS", "≤ 120 MB", at_most(120), never_run, unit="MB")
    broken = Measure("P2", "registry token", "≥ 0.6×", at_least(0.6), never_run)
    rows = [
        Row(passing, Result([0.9, 0.82, 1.1], detail="0 SQL a request")),
        Row(failing, Result([1.3, 1.2, 1.25])),
        Row(memory, Result([104.0])),
        Row(broken, None, "RuntimeError: boom"),
    ]
    text = render(
        rows, versions={"PostgreSQL": "15"}, rounds=3, command="python -m bench", elapsed=90
    )
    assert "| P1 | agent environment, warm | 0.90× | 0.82× – 1.10× | 3 | ≥ 0.8× | yes |" in text
    assert "| P7 | push + pull | 1.25× | 1.20× – 1.30× | 3 | ≤ 1.1× | **no** |" in text
    assert "| P8 web | RSS | 104 MB |" in text
    assert "**not measured**: RuntimeError: boom" in text
    assert "- **P1** 0 SQL a request" in text
    assert "- PostgreSQL 15" in text
    assert "make bench" in text


def test_the_report_lists_the_shortfall_of_each_goal_not_met() -> None:
    why = "Profiled: the serializer is half of it. Next: plain rows."
    met = Measure("P1", "agent environment", "≥ 0.8×", at_least(0.8), never_run, shortfall="no")
    clusters = Measure("P5 clusters", "list", "≥ 0.2×", at_least(0.2), never_run, shortfall=why)
    queues = Measure("P5 queues", "list", "≥ 0.2×", at_least(0.2), never_run, shortfall=why)
    unexplained = Measure("P7", "push + pull", "≤ 1.1×", at_most(1.1), never_run)
    broken = Measure("P2", "token", "≥ 0.6×", at_least(0.6), never_run, shortfall="not run")
    rows = [
        Row(met, Result([0.9])),
        Row(clusters, Result([0.1])),
        Row(queues, Result([0.15])),
        Row(unexplained, Result([1.3])),
        Row(broken, None, "RuntimeError: boom"),
    ]
    text = render(rows, versions={}, rounds=1, command="python -m bench", elapsed=60)
    section = text.split("## Goals not met\n\n", 1)[1].split("\n\n", 1)[0]
    assert text.index("| P7 |") < text.index("## Goals not met") < text.index("## Details")
    assert section.splitlines() == [
        f"- **P5 clusters, P5 queues**: {why}",
        "- **P7**: Not analysed yet.",
    ]


def test_no_goals_not_met_section_when_every_goal_is_met() -> None:
    met = Measure("P1", "agent environment", "≥ 0.8×", at_least(0.8), never_run, shortfall="no")
    text = render(
        [Row(met, Result([0.9]))], versions={}, rounds=1, command="python -m bench", elapsed=60
    )
    assert "Goals not met" not in text


def test_the_measures_that_miss_their_goals_say_why() -> None:
    from bench.measures import scale, tasks

    measures = {measure.id: measure for measure in [*MEASURES, *tasks.MEASURES, *scale.MEASURES]}
    explained = ["P2", "P5 clusters", "P5 queues", "P3 threads p50", "P3 prefork p95", "P4"]
    for id_ in [*explained, "P9", "P10"]:
        assert "2026-12-01" in measures[id_].shortfall, id_
    assert measures["P3 threads p50"].shortfall == measures["P4"].shortfall


@pytest.mark.integration  # starts a Python process
def test_the_harness_imports_before_django_is_set_up() -> None:
    """``python -m bench`` picks its ports (``tests.support.processes``, which imports
    ``render_registry_config``) before ``django.setup()``: nothing on that path may import a
    model at import time (the registry backends' import did, and `make bench` stopped)."""
    import subprocess
    import sys

    from tests.support.processes import ROOT

    code = "from bench.stack import free_port; print(free_port() > 0)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
