"""Benchmark of the evaluation pipeline against its peers, on the local stack only.

``python -m bench.run`` starts the local Langfuse server and the offline judge, seeds one day
of tagged traces, evaluates them with each method and prints one Markdown table.
"""
