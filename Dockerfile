# The worker image (harness and sandbox workers, and the live server), for docker-compose.yml. Needs a registry.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml ./
COPY contracts.py worker.py starter.py logs.py connection.py agent_files.py session_log.py payload_store.py schedules.py \
     vault.py codec.py telemetry.py ./
COPY workflows ./workflows
COPY activities ./activities
COPY live ./live
COPY sandboxes ./sandboxes
COPY scripted_model ./scripted_model
COPY agents ./agents
RUN pip install --no-cache-dir .
ENTRYPOINT ["python", "worker.py"]
