"""Code shared by the DAGs: the Langfuse evaluation library lives in ``include.langfuse_eval``."""
