"""Evaluate Langfuse traces with LLM judges and write the scores back.

The package imports no Airflow: the DAG in ``dags/`` wires these functions into tasks, and the
same functions run on their own in tests and scripts.
"""

EVALUATOR_VERSION = "2026.12.1"
"""Version recorded in every score's metadata. Bump it when a prompt, rubric or parser changes."""
