"""Provider metadata that Airflow's ProvidersManager loads through the entry point.

Since Airflow 3.2 the connection form comes from ``ui-field-behaviour`` and ``conn-fields`` in
the provider info, and the ProvidersManager builds it without importing the hook. The hook
methods ``get_ui_field_behaviour`` and ``get_connection_form_widgets`` are deprecated there.
"""

from __future__ import annotations

from typing import Any

DISTRIBUTION_NAME = "langfuse-airflow-eval"
"""Must equal the project name in ``pyproject.toml``: Airflow rejects provider info whose
``package-name`` differs from the distribution that declares the entry point."""

CONNECTION_TYPE = "langfuse"
HOOK_CLASS_NAME = "langfuse_eval_provider.hook.LangfuseHook"
HOOK_NAME = "Langfuse"

PROJECT_ID_FIELD = "project_id"
"""Key in the connection extra of the optional project id, shown as its own form field."""

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "extra"],
    "relabeling": {
        "host": "Langfuse Host",
        "login": "Public Key",
        "password": "Secret Key",
    },
    "placeholders": {
        "host": "https://cloud.langfuse.com",
        "login": "pk-lf-...",
        "password": "sk-lf-...",
    },
}

CONN_FIELDS: dict[str, Any] = {
    PROJECT_ID_FIELD: {
        "label": "Project ID",
        "description": "Optional. The project id in the Langfuse UI's URLs, used for the "
        "'View in Langfuse' links. When empty, it is read from the keys through "
        "GET /api/public/projects.",
        "schema": {"type": ["string", "null"]},
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider info that registers the ``langfuse`` connection type."""
    return {
        "package-name": DISTRIBUTION_NAME,
        "name": "Langfuse evaluation",
        "description": "Langfuse connection type and 'View in Langfuse' links for the "
        "langfuse_external_eval DAG.",
        "connection-types": [
            {
                "connection-type": CONNECTION_TYPE,
                "hook-class-name": HOOK_CLASS_NAME,
                "hook-name": HOOK_NAME,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
