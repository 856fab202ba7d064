"""The shape of the code, as tests: the REST API's base view fails closed, views reach tenant rows
only through it, no import circle among the apps' modules, and the import-linter contracts hold.

Each of these has been seen failing on purpose (a view without scopes, a view querying
``Cluster.objects``, an import back from a task module, a broken layer)."""

from __future__ import annotations

import ast
import sys
import types
from collections.abc import Callable, Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

import grimp
import pytest
from django.contrib.auth.models import User
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Model
from django.test import Client
from django.urls import path
from importlinter.cli import lint_imports
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clusters import services
from clusters.api.base import SCOPING_HOOKS, OrganizationAPIView
from clusters.checks import organization_routes
from clusters.models import (
    AgentEnvironmentVariable,
    ApiScope,
    ApiToken,
    Cluster,
    ClusterAgentToken,
    Organization,
    Queue,
)
from registries.models import Registry

ROOT = Path(__file__).resolve().parents[1]
APPS = ("controlplane", "clusters", "registries")


def handler(request: Request, *args: Any, **kwargs: Any) -> Response:
    return Response({})


def view(name: str, **attributes: Any) -> type[OrganizationAPIView]:
    """A subclass of the base view named ``name`` (in this module), with ``attributes``."""
    return type(name, (OrganizationAPIView,), attributes)


# --- the base view fails closed -------------------------------------------------------------


def test_a_view_that_declares_no_read_scope_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured) as refused:
        view("Reader", get=handler)

    assert str(refused.value) == (
        "tests.test_architecture.Reader answers GET, HEAD, OPTIONS but declares no read_scope: "
        "a view names the scope of each method it answers (there is no default)."
    )


def test_a_view_that_declares_no_write_scope_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured) as refused:
        view("Writer", read_scope=ApiScope.READ_CLUSTERS, get=handler, delete=handler)

    assert str(refused.value) == (
        "tests.test_architecture.Writer answers DELETE but declares no write_scope: "
        "a view names the scope of each method it answers (there is no default)."
    )


def test_a_scope_that_is_not_an_api_scope_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured) as refused:
        view("Typo", read_scope="read_cluster", get=handler)

    assert str(refused.value) == (
        "tests.test_architecture.Typo.read_scope is 'read_cluster', which is not an API scope "
        "(one of read_clusters, write_clusters, read_registries, write_registries, "
        "read_organizations, read_audit_events, read_registry_backends, write_registry_backends, "
        "read_registry_keys, write_registry_keys)."
    )


def test_a_base_for_views_needs_no_scope_until_it_answers_a_method() -> None:
    base = view("QueueBase", get_queue=handler)

    with pytest.raises(ImproperlyConfigured, match="QueueAction answers POST but declares no"):
        type("QueueAction", (base,), {"post": handler})


def test_overriding_get_cluster_is_refused() -> None:
    scoped = {"read_scope": ApiScope.READ_CLUSTERS, "get": handler}

    with pytest.raises(ImproperlyConfigured) as refused:
        view("Sneaky", get_cluster=lambda self, cluster_id: Cluster.objects.get(pk=cluster_id))
    with pytest.raises(ImproperlyConfigured) as refused_with_scopes:
        view("SneakyReader", get_cluster=handler, **scoped)

    assert str(refused.value) == (
        "tests.test_architecture.Sneaky overrides get_cluster, which OrganizationAPIView does not "
        "let a view replace: views reach clusters only through it: start from "
        "get_cluster(cluster_id) and the cluster's related managers."
    )
    assert str(refused_with_scopes.value) == str(refused.value).replace("Sneaky", "SneakyReader")


@pytest.mark.parametrize("hook", sorted(SCOPING_HOOKS))
def test_no_tenant_scoping_hook_can_be_overridden(hook: str) -> None:
    class Mixin:
        pass

    setattr(Mixin, hook, handler)

    with pytest.raises(ImproperlyConfigured, match=f"overrides {hook}, which Organization"):
        view("Direct", **{hook: handler})
    with pytest.raises(ImproperlyConfigured, match=f"overrides {hook}, which Organization"):
        type("Mixed", (Mixin, OrganizationAPIView), {})


@pytest.fixture
def route(settings: Any) -> Iterator[Callable[..., None]]:
    """``route(view_class, ...)``: a URL configuration with each view under an organization."""
    module = types.ModuleType("tests.urls_under_test")
    sys.modules[module.__name__] = module

    def install(*view_classes: type[APIView]) -> None:
        module.urlpatterns = [
            path(f"v2/organizations/<str:org_slug>/{cls.__name__.lower()}", cls.as_view())
            for cls in view_classes
        ]
        settings.ROOT_URLCONF = module.__name__

    yield install
    del sys.modules[module.__name__]


def api_errors() -> list[tuple[str, str, Any]]:
    """What ``manage.py check`` reports of the REST API's views."""
    return [
        (error.id, error.msg, error.obj)
        for error in checks.run_checks(tags=[checks.Tags.urls])
        if (error.id or "").startswith("clusters.")
    ]


def test_the_check_finds_nothing_in_the_real_url_configuration() -> None:
    assert api_errors() == []
    assert len(organization_routes()) >= 11


def test_the_check_reports_a_handler_added_after_the_class(route: Callable[..., None]) -> None:
    reader = view("LateWriter", read_scope=ApiScope.READ_CLUSTERS, get=handler)
    reader.post = handler  # __init_subclass__ cannot see this
    route(reader)

    assert api_errors() == [
        (
            "clusters.E002",
            "tests.test_architecture.LateWriter answers POST but declares no write_scope: "
            "a view names the scope of each method it answers (there is no default).",
            "v2/organizations/<str:org_slug>/latewriter",
        )
    ]


def test_the_check_reports_a_hook_replaced_or_a_scope_removed_after_the_class(
    route: Callable[..., None],
) -> None:
    patched = view("Patched", read_scope=ApiScope.READ_CLUSTERS, get=handler)
    patched.clusters = lambda self: Cluster.objects.all()
    unscoped = view("Unscoped", read_scope=ApiScope.READ_CLUSTERS, get=handler)
    del unscoped.read_scope
    route(patched, unscoped)

    assert api_errors() == [
        (
            "clusters.E002",
            "tests.test_architecture.Patched overrides clusters, which OrganizationAPIView does "
            "not let a view replace: views reach clusters only through it: start from "
            "get_cluster(cluster_id) and the cluster's related managers.",
            "v2/organizations/<str:org_slug>/patched",
        ),
        (
            "clusters.E002",
            "tests.test_architecture.Unscoped answers GET, HEAD, OPTIONS but declares no "
            "read_scope: a view names the scope of each method it answers (there is no default).",
            "v2/organizations/<str:org_slug>/unscoped",
        ),
    ]


def test_the_check_reports_a_view_that_does_not_use_the_base(route: Callable[..., None]) -> None:
    bare = type("Bare", (APIView,), {"get": handler})
    route(bare)

    assert api_errors() == [
        (
            "clusters.E001",
            "v2/organizations/<str:org_slug>/bare is served by Bare, which is not an "
            "OrganizationAPIView: nothing checks its token, organization or scopes.",
            "v2/organizations/<str:org_slug>/bare",
        )
    ]


@pytest.mark.django_db
def test_a_method_without_a_declared_scope_is_not_allowed(route: Callable[..., None]) -> None:
    """A read-only view needs no write scope; a write to it is refused before any handler."""
    route(view("ReadOnly", read_scope=ApiScope.READ_CLUSTERS, get=handler))
    organization = services.organization_create(slug="acme", name="Acme")
    _, secret = services.api_token_create(
        user=User.objects.create_user("sam"),
        organization=organization,
        description="all scopes",
        scopes=list(ApiScope.values),
    )
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert client.get("/v2/organizations/acme/readonly").status_code == 200
    response = client.post("/v2/organizations/acme/readonly")
    assert response.status_code == 405
    assert response.json() == {"message": 'Method "POST" not allowed.'}


# --- views reach tenant rows only through the base view --------------------------------------

#: Rows of an organization: a view that reads one through its manager bypasses get_cluster.
TENANT_MODELS: tuple[type[Model], ...] = (
    Organization,
    ApiToken,
    Cluster,
    Queue,
    ClusterAgentToken,
    AgentEnvironmentVariable,
    Registry,
)
MANAGERS = {"objects", "_default_manager", "_base_manager"}


def api_view_modules() -> list[types.ModuleType]:
    """The modules that define the REST API's views: those the URL configuration routes to (and
    their bases, short of OrganizationAPIView), and every ``<app>/api/views*.py``."""
    modules = {}
    for _, routed in organization_routes():
        for cls in routed.view_class.__mro__:
            if cls is OrganizationAPIView:
                break
            modules[cls.__module__] = sys.modules[cls.__module__]
    for app in ("clusters", "registries"):
        for file in sorted((ROOT / app).glob("api/views*.py")):
            name = ".".join(file.relative_to(ROOT).with_suffix("").parts)
            modules[name] = import_module(name)
    return [modules[name] for name in sorted(modules)]


def resolve(node: ast.expr, namespace: dict[str, Any]) -> Any:
    """What a name (``Cluster``) or dotted name (``models.Cluster``) is bound to in a module."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        return getattr(resolve(node.value, namespace), node.attr, None)
    return None


def manager_accesses(name: str, source: str, namespace: dict[str, Any]) -> list[str]:
    """Where module ``name`` reaches a tenant model through its manager (``Cluster.objects``);
    ``namespace``, the module's globals, says what each name in ``source`` is."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Attribute) and node.attr in MANAGERS:
            model = resolve(node.value, namespace)
            if isinstance(model, type) and issubclass(model, TENANT_MODELS):
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_api_views_query_no_tenant_model_directly() -> None:
    """Views reach rows through get_cluster and their cluster's related managers (the base view
    is the one place that starts from ``Cluster.objects``)."""
    modules = api_view_modules()
    assert {module.__name__.split(".")[0] for module in modules} == {"clusters", "registries"}

    accesses = [
        access
        for module in modules
        for access in manager_accesses(
            module.__name__, Path(module.__file__ or "").read_text(), vars(module)
        )
    ]
    assert accesses == []


def test_the_manager_access_finder_sees_aliases_and_dotted_names() -> None:
    source = (
        "from clusters import models\n"
        "from clusters.models import Queue as Q\n"
        "rows = models.Cluster.objects.all()\n"
        "queues = Q._default_manager.all()\n"
        "mine = cluster.queues.all()\n"
    )
    namespace = {"models": import_module("clusters.models"), "Q": Queue, "cluster": None}

    assert manager_accesses("example", source, namespace) == [
        "example:3: models.Cluster.objects",
        "example:4: Q._default_manager",
    ]


# --- imports ------------------------------------------------------------------------------


def import_cycles(graph: Any) -> list[list[str]]:
    """Every import circle among the graph's modules: one shortest circle through the first
    module of each strongly connected component of more than one module. A package's
    ``__init__`` importing its submodules is an edge one way only; it is a circle only if a
    submodule imports the package back. Function-local and TYPE_CHECKING imports count: hiding
    a circle in one does not remove it."""
    successors = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in successors[module]:
            if imported not in index:
                connect(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while component[-1:] != [module]:
                component.append(stack.pop())
            components.append(sorted(component))

    for module in sorted(successors):
        if module not in index:
            connect(module)
    cycles = []
    for component in sorted(c for c in components if len(c) > 1):
        start = component[0]
        chains = [
            graph.find_shortest_chain(importer=imported, imported=start)
            for imported in successors[start]
            if imported in component
        ]
        cycles.append([start, *min(chains, key=len)])
    return cycles


def describe(graph: Any, cycle: list[str]) -> str:
    """``a:12 -> b:40 -> a``: each module and the line that imports the next."""
    steps = []
    for importer, imported in zip(cycle, cycle[1:], strict=False):
        line = graph.get_import_details(importer=importer, imported=imported)[0]["line_number"]
        steps.append(f"{importer}:{line}")
    return " -> ".join([*steps, cycle[-1]])


def test_no_import_cycle_among_the_apps_modules() -> None:
    graph = grimp.build_graph(*APPS, cache_dir=None)

    assert [describe(graph, cycle) for cycle in import_cycles(graph)] == []


def test_the_cycle_finder_reports_a_circle() -> None:
    graph = grimp.ImportGraph()
    for module in ("app", "app.services", "app.tasks", "app.reconciler", "app.models"):
        graph.add_module(module)
    graph.add_import(importer="app", imported="app.services", line_number=1, line_contents="")
    graph.add_import(importer="app.services", imported="app.tasks", line_number=9, line_contents="")
    graph.add_import(
        importer="app.services", imported="app.models", line_number=3, line_contents=""
    )
    graph.add_import(
        importer="app.tasks", imported="app.reconciler", line_number=5, line_contents=""
    )
    graph.add_import(
        importer="app.reconciler", imported="app.services", line_number=7, line_contents=""
    )

    assert [describe(graph, cycle) for cycle in import_cycles(graph)] == [
        "app.reconciler:7 -> app.services:9 -> app.tasks:5 -> app.reconciler"
    ]


def test_the_import_linter_contracts_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    """``lint-imports``, in this process (no subprocess: it only reads the source)."""
    exit_status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    printed = capsys.readouterr().out

    assert exit_status == 0, printed.partition("Broken contracts")[2].strip("-\n ")
    assert " 0 broken." in printed


# --- what loading the models loads -----------------------------------------------------------

#: Prints which web-layer modules are imported once every app's models are (in a fresh process:
#: this one has long loaded them all).
MODELS_ONLY = """
import sys
import django.apps.config as config
original = config.AppConfig.import_models
def import_models(self):
    original(self)
    if self.label == "registries":
        print(sorted(m for m in ("clusters.admin", "clusters.api.base", "rest_framework.views",
                                 "clusters.agent.authentication") if m in sys.modules))
config.AppConfig.import_models = import_models
import django
django.setup()
"""


@pytest.mark.integration
def test_loading_the_models_loads_neither_the_console_nor_the_web_layer() -> None:
    """registries.models imports the seam while Django loads models: the seam's admin and view
    names must not come with it (they would register the console during app loading)."""
    import subprocess

    shown = subprocess.run(
        [sys.executable, "-c", MODELS_ONLY],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert shown.stdout.strip() == "[]"
