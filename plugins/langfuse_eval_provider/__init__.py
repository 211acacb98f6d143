"""Airflow integration of the Langfuse evaluation: connection type, hook and operator link.

The package lives in ``plugins/`` so that every Airflow process can import it by the name
``langfuse_eval_provider``:

- Airflow puts the plugins folder on ``sys.path`` in the scheduler, api-server, dag-processor,
  triggerer and workers, and the Docker image mounts it at ``/opt/airflow/plugins``, which is
  on ``PYTHONPATH`` there.
- ``pip install .`` (or ``pip install -e .``) installs the package from this folder, so it
  imports without the plugins folder on ``sys.path`` as well.

Only the installed distribution registers the ``langfuse`` connection type, through the
``apache_airflow_provider`` entry point in ``pyproject.toml``. Airflow's ProvidersManager reads
the connection form from :func:`langfuse_eval_provider.provider_info.get_provider_info`.

The ``.airflowignore`` beside this file stops Airflow's plugin loader from importing these
files a second time as top-level modules.
"""
