"""The "View in Langfuse" operator link: the project's traces list, filtered by tag and time.

Airflow 3.3 stores operator links in XCom. When a task instance ends, the task runner calls
``get_link`` of each link in the operator's ``operator_extra_links`` and pushes the URL under
the link's ``xcom_key``. The api-server serves that XCom value, so ``get_link`` runs only on
the worker, with the rendered task and its runtime task instance.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from airflow.sdk import BaseOperatorLink

from langfuse_eval_provider.hook import LangfuseHook

log = logging.getLogger(__name__)

LINK_NAME = "View in Langfuse"
ONE_MILLISECOND = timedelta(milliseconds=1)
ONE_MICROSECOND = timedelta(microseconds=1)


def ui_timestamp(moment: datetime) -> str:
    """Format a moment like JavaScript's ``toISOString``: UTC, milliseconds and ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_moment(value: str) -> datetime:
    """Parse an ISO 8601 timestamp that has an offset or a ``Z`` suffix."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _escape_option(value: str) -> str:
    # The traces table joins option values with "|" and escapes "\" and "|" with a backslash.
    return value.replace("\\", "\\\\").replace("|", "\\|")


def traces_url(
    host: str,
    project_id: str,
    tag: str,
    start: datetime,
    end: datetime,
    *,
    end_inclusive: bool = False,
) -> str:
    """Build the Langfuse UI URL of the traces that carry ``tag`` and started in [start, end).

    The ``filter`` query parameter contains comma-separated conditions of the form
    ``column;type;key;operator;value``, each value percent-encoded, as the Langfuse web UI
    writes them. The UI timestamps have millisecond precision, so ``end`` is rounded up to the
    next millisecond and no trace before it drops out. ``end_inclusive`` keeps a trace that
    started exactly at ``end``.
    """
    if end_inclusive:
        end += ONE_MICROSECOND
    rounded_end = end.replace(microsecond=end.microsecond // 1000 * 1000)
    if rounded_end < end:
        rounded_end += ONE_MILLISECOND
    conditions = [
        ("tags", "arrayOptions", "any of", _escape_option(tag)),
        ("timestamp", "datetime", ">=", ui_timestamp(start)),
        ("timestamp", "datetime", "<", ui_timestamp(rounded_end)),
    ]
    encoded = ",".join(
        f"{column};{kind};;{operator};{quote(value, safe='')}"
        for column, kind, operator, value in conditions
    )
    query = urlencode({"filter": encoded}, quote_via=quote)
    return f"{host.rstrip('/')}/project/{quote(project_id, safe='')}/traces?{query}"


class LangfuseTracesLink(BaseOperatorLink):
    """Link a task to the Langfuse traces it evaluated.

    A page task links to its page's start-time range, read from its ``page`` argument. Any
    other task links to the run's window, the return value of ``window_task_id``. Both filter
    on the tag from the run's ``tag`` param.

    Args:
        conn_id: The Langfuse connection whose host and project the link points at.
        page_argument: Task argument with the page (``oldest_start`` and ``newest_start``).
        window_task_id: Task whose return value is the run's window (``start`` and ``end``),
            used when ``page_argument`` is None.
        tag_param: The run param with the trace tag.
    """

    name = LINK_NAME

    def __init__(
        self,
        *,
        conn_id: str = LangfuseHook.default_conn_name,
        page_argument: str | None = None,
        window_task_id: str | None = None,
        tag_param: str = "tag",
    ) -> None:
        if (page_argument is None) == (window_task_id is None):
            raise ValueError(
                "LangfuseTracesLink needs exactly one of page_argument and window_task_id."
            )
        self.conn_id = conn_id
        self.page_argument = page_argument
        self.window_task_id = window_task_id
        self.tag_param = tag_param

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """Build the URL, or return "" (a disabled link) when it cannot be built.

        ``ti_key`` is the runtime task instance, because the task runner calls this method.
        """
        try:
            view = self._traces_view(operator, ti_key)
            if view is None:
                return ""
            tag, start, end, end_inclusive = view
            hook = LangfuseHook(self.conn_id)
            host = hook.get_settings().host
            project_id = hook.get_project_id()
        except Exception as error:
            log.warning(
                "Failed to build the %r link of task %s: %s", LINK_NAME, operator.task_id, error
            )
            return ""
        return traces_url(host, project_id, tag, start, end, end_inclusive=end_inclusive)

    def _traces_view(self, operator: Any, ti: Any) -> tuple[str, datetime, datetime, bool] | None:
        tag = ti.get_template_context()["params"][self.tag_param]
        if self.page_argument is not None:
            page = operator.op_kwargs.get(self.page_argument)
            if not isinstance(page, Mapping):
                return None
            # A page walks from its newest start back to its oldest start, both inclusive.
            return tag, parse_moment(page["oldest_start"]), parse_moment(page["newest_start"]), True
        window = ti.xcom_pull(task_ids=self.window_task_id)
        if not isinstance(window, Mapping):
            return None
        return tag, parse_moment(window["start"]), parse_moment(window["end"]), False
