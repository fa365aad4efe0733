"""Test settings: the demo project's, with fast hashing and test-only tweaks.

``DATABASE_URL`` and ``REDIS_URL`` select real PostgreSQL / Redis exactly as in production.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("DEBUG", "1")

from project.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.apps.TestsConfig"]  # noqa: F405

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not shared-cache memory: WAL and the busy timeout then behave as in production
    # when the run recorder writes from its own thread.
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(BASE_DIR / "var" / f"test-{os.getpid()}.sqlite3")  # noqa: F405
    }
    (BASE_DIR / "var").mkdir(exist_ok=True)  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
SERVESTATIC_AUTOREFRESH = True
SERVESTATIC_USE_FINDERS = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

# Subprocess workers in multi-process tests get short leases and polls through the environment.
PIPELINE_APP = {
    **PIPELINE_APP,  # noqa: F405
    "POLL_INTERVAL": 0.5,
    # Tests start job services explicitly; the browser test's server turns this on.
    "EMBEDDED_WORKER": False,
    **json.loads(os.environ.get("PIPELINE_APP_TEST_CONFIG", "{}")),
}
if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = os.environ.get(  # noqa: F405
        "CHANNELS_PREFIX", "pipeline-tests"
    )
