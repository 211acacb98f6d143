# Image for docker-compose.yaml: Airflow with this project's pinned dependencies.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt constraints.txt /opt/project/
RUN pip install --no-cache-dir -r /opt/project/requirements.txt -c /opt/project/constraints.txt
ENV PYTHONPATH=/opt/airflow:/opt/airflow/plugins \
    DEEPEVAL_TELEMETRY_OPT_OUT=1 \
    DEEPEVAL_DISABLE_DOTENV=1 \
    DEEPEVAL_FILE_SYSTEM=READ_ONLY
