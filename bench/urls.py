"""The product's URLs plus the bare baseline view (bench settings only)."""

from django.urls import path

from bench.views import bare
from controlplane.urls import handler400, handler404, handler500, urlpatterns

urlpatterns = [path("bench/bare", bare, name="bench-bare"), *urlpatterns]

__all__ = ["handler400", "handler404", "handler500", "urlpatterns"]
