"""ASGI entry point: HTTP through Django, WebSockets behind auth and an origin check, and the
``channel`` protocol for workers (``manage.py pipelineworker`` / ``runworker pipeline-jobs``)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

# Imported after Django is set up: these import models.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from pipeline_app.embedded import EmbeddedJobServiceMiddleware  # noqa: E402
from pipeline_app.routing import channel_routes, websocket_urlpatterns  # noqa: E402

application = EmbeddedJobServiceMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
            ),
            "channel": ChannelNameRouter(channel_routes()),
        }
    )
)
