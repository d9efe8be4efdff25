"""Backend fixtures, one support module per kind (tests/support/):

- databases.py: `migrated_template`, `backend_env`, `module_backend_env`, `django_orm`, and
  `manage(env, *args)` for `python -m backend ...`;
- replicas.py: `replicas`, `module_replicas` (gunicorn replicas on free ports);
- api.py: `Api`, `login`, `api_client` (users, staff, tours through the API).

The booking tests' shared stack is tests/backend/bookings_support.py.
"""

from tests.support.api import STAFF_PASSWORD, USER_PASSWORD, Api, ApiHelpers, api_client, login
from tests.support.databases import (
    TEST_SECRET_KEY,
    backend_env,
    base_env,
    clone_databases,
    django_orm,
    drop_databases,
    manage,
    migrated_template,
    module_backend_env,
)
from tests.support.replicas import ReplicaStarter, module_replicas, replicas

__all__ = [
    "STAFF_PASSWORD",
    "TEST_SECRET_KEY",
    "USER_PASSWORD",
    "Api",
    "ApiHelpers",
    "ReplicaStarter",
    "api_client",
    "backend_env",
    "base_env",
    "clone_databases",
    "django_orm",
    "drop_databases",
    "login",
    "manage",
    "migrated_template",
    "module_backend_env",
    "module_replicas",
    "replicas",
]
