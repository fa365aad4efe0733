from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/pipelines/", permanent=False)),
    path("admin/", admin.site.urls),
    # dashboard users need not be staff: the admin's login admits staff only
    path("accounts/", include("django.contrib.auth.urls")),
    path("pipelines/", include("pipeline_app.urls")),
]
