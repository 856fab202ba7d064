from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from controlplane.api.views import root

urlpatterns = [
    # The hot paths first (the agent environment, the webhook; the registry token and the job
    # credentials): Django tries the patterns in order, each a regular expression.
    path("", include("clusters.urls")),
    path("", include("registries.urls")),
    path("", root, name="root"),
    path("admin/", admin.site.urls),
    path("", include("clusters.api.urls")),  # its paths are written out in full
    path("v2/organizations/<str:org_slug>/", include("registries.api.urls")),
    path("v2/operator/", include("registries.api.operator")),
    path("v2/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view: its start-up script is a file (?script), which the CSP allows, not inline.
    path("v2/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]

handler400 = "controlplane.api.exceptions.json_bad_request"
handler404 = "controlplane.api.exceptions.json_not_found"
handler500 = "controlplane.api.exceptions.json_server_error"
