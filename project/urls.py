from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/pipelines/", permanent=False)),
    path("admin/", admin.site.urls),
    # dashboard users need not be staff: the admin's login admits staff only (and no password
    # reset here: it would send mail)
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("pipelines/", include("pipeline_app.urls")),
]
