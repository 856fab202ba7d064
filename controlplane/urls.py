from django.contrib import admin
from django.urls import include, path

from controlplane.api.views import root

urlpatterns = [
    path("", root, name="root"),
    path("admin/", admin.site.urls),
    path("", include("clusters.urls")),
    path("", include("registries.urls")),
]

handler404 = "controlplane.api.exceptions.json_not_found"
handler500 = "controlplane.api.exceptions.json_server_error"
