"""Send JSON Lines records as Langfuse traces through the real Langfuse SDK.

Each record `{"input": ..., "output": ...}` becomes one trace whose root observation carries
the input and output, tagged through `propagate_attributes`, as a production app would send
it. Usage:

    python -m stack.seed --file stack/data/demo.jsonl --tag ext_eval_pipelines

Credentials come from `LANGFUSE_PUBLIC_KEY`, `LANGFUSE_SECRET_KEY` and `LANGFUSE_BASE_URL`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langfuse import Langfuse, propagate_attributes

logger = logging.getLogger(__name__)

ENV_VARS = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL")
DEFAULT_TRACE_NAME = "app"


class SeedFileError(ValueError):
    """A JSON Lines file with an invalid record."""


def load_records(path: Path) -> list[dict[str, Any]]:
    """Read and validate a JSON Lines file of `{"input": ..., "output": ...}` records.

    Blank lines are skipped. `output` may be missing, null or empty.

    Args:
        path: The file.

    Returns:
        The records, in file order.

    Raises:
        SeedFileError: For invalid JSON, a line that is not an object or has no `input` key;
            the message names the file and line number.
        OSError: If the file cannot be read.
    """
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise SeedFileError(f"{path}:{number}: invalid JSON: {exc}") from exc
            if not isinstance(record, dict):
                kind = type(record).__name__
                raise SeedFileError(f"{path}:{number}: expected a JSON object, got {kind}")
            if "input" not in record:
                raise SeedFileError(f"{path}:{number}: missing key 'input'")
            records.append(record)
    return records


def client_from_env() -> Langfuse:
    """Build a Langfuse client from `LANGFUSE_*` variables, with tracing fully sampled.

    Returns:
        The client.

    Raises:
        RuntimeError: If a variable is missing (the message names it, never its value).
    """
    missing = [name for name in ENV_VARS if not os.environ.get(name)]
    if missing:
        raise RuntimeError(
            f"missing environment variables: {', '.join(missing)}; set them to the Langfuse "
            "public key, secret key and base URL"
        )
    return Langfuse(
        public_key=os.environ["LANGFUSE_PUBLIC_KEY"],
        secret_key=os.environ["LANGFUSE_SECRET_KEY"],
        base_url=os.environ["LANGFUSE_BASE_URL"],
        tracing_enabled=True,
        sample_rate=1.0,
    )


def seed_records(
    records: Sequence[dict[str, Any]],
    tag: str,
    *,
    client: Langfuse | None = None,
    trace_name: str | None = None,
    environment: str | None = None,
    extra_tags: Sequence[str] = (),
) -> list[str]:
    """Send each record as one trace and flush.

    A client built here (from the environment) is shut down at the end. A passed `client` is
    only flushed, so the caller can keep using it.

    Args:
        records: Records with an `input` key and an optional `output` key.
        tag: Trace tag to set on every trace.
        client: Client to send with; built by `client_from_env()` when None.
        trace_name: Trace name and root observation name (`app` when None).
        environment: Langfuse environment of the traces; the client's when None.
        extra_tags: More tags to set beside `tag`.

    Returns:
        The trace ids (32 hex characters), in record order.
    """
    own_client = client is None
    langfuse = client_from_env() if client is None else client
    name = trace_name or DEFAULT_TRACE_NAME
    tags = [tag, *(extra for extra in extra_tags if extra != tag)]
    trace_ids: list[str] = []
    try:
        for record in records:
            with (
                propagate_attributes(tags=tags, trace_name=name, environment=environment),
                langfuse.start_as_current_observation(name=name, input=record["input"]) as root,
            ):
                if record.get("output") is not None:
                    root.update(output=record["output"])
                trace_ids.append(root.trace_id)
        langfuse.flush()
    finally:
        if own_client:
            langfuse.shutdown()
    return trace_ids


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `python -m stack.seed`."""
    parser = argparse.ArgumentParser(description="Send JSON Lines records as Langfuse traces.")
    parser.add_argument("--file", type=Path, required=True, help="JSON Lines file of records")
    parser.add_argument("--tag", required=True, help="trace tag, e.g. ext_eval_pipelines")
    parser.add_argument("--trace-name", default=None, help="trace name (default 'app')")
    parser.add_argument("--environment", default=None, help="Langfuse environment")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Validate the file, then send every record; print one summary line.

    Returns:
        0 on success, 2 for an invalid file or missing credentials, 1 when the server
        rejects the credentials.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        records = load_records(args.file)
    except (SeedFileError, OSError) as exc:
        print(f"error: {exc}; nothing was sent", file=sys.stderr)
        return 2
    try:
        client = client_from_env()
    except RuntimeError as exc:
        print(f"error: {exc}; nothing was sent", file=sys.stderr)
        return 2
    try:
        if not client.auth_check():
            print("error: Langfuse auth check failed; nothing was sent", file=sys.stderr)
            client.shutdown()
            return 1
    except Exception as exc:
        print(
            f"error: Langfuse auth check failed at {os.environ['LANGFUSE_BASE_URL']}: "
            f"{type(exc).__name__}; check the keys and the URL. Nothing was sent",
            file=sys.stderr,
        )
        client.shutdown()
        return 1
    try:
        trace_ids = seed_records(
            records,
            args.tag,
            client=client,
            trace_name=args.trace_name,
            environment=args.environment,
        )
    finally:
        client.shutdown()
    print(f"sent {len(trace_ids)} records from {args.file} as traces tagged {args.tag!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
