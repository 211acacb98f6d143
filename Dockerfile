# Image for docker-compose.yaml: Airflow 3.3.2 on Python 3.11 with this project's pinned
# dependencies and the project installed as a distribution (its Airflow provider entry point
# registers the Langfuse connection type).
FROM apache/airflow:3.3.2-python3.11

# The direct pins resolved against the whole constraint set. Both files pin apache-airflow to
# the image's version, so pip keeps the Airflow that the image ships.
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/project/
RUN pip install --no-cache-dir -r /opt/project/requirements.txt -c /opt/project/constraints.txt

# The project itself. Its dependencies are all installed above, hence --no-deps.
COPY --chown=airflow:0 . /opt/project/
RUN pip install --no-cache-dir --no-deps /opt/project

# The DAG and the code it imports, so that the image also runs without docker-compose.yaml's
# mounts. The compose file mounts the host's folders over these copies.
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 include /opt/airflow/include
COPY --chown=airflow:0 stack /opt/airflow/stack

# Mount points of the compose file's named volumes: an empty volume takes the owner of the
# folder it is mounted on, so the airflow user can write the UI password file and the local
# Langfuse database.
RUN mkdir -p /opt/airflow/auth /opt/airflow/local-stack

# Airflow itself puts only the dags, plugins and config folders on sys.path, and the DAG
# imports the include package from /opt/airflow. PYTHONPATH comes before site-packages, so the
# folders in /opt/airflow (and the compose mounts over them) win over the installed copy, and
# edits on the host take effect without a rebuild. deepeval sends no telemetry, reads no .env
# file and writes no files.
ENV PYTHONPATH=/opt/airflow:/opt/airflow/plugins \
    DEEPEVAL_TELEMETRY_OPT_OUT=1 \
    DEEPEVAL_DISABLE_DOTENV=1 \
    DEEPEVAL_FILE_SYSTEM=READ_ONLY
