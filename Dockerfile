# The worker image (harness and sandbox workers, and the live server), for docker-compose.yml. Needs a registry.
FROM python:3.11-slim
# The package is built from /src and installed into site-packages; the sources do not stay in the
# image, so nothing can import them instead of the installed `durable_agents`.
COPY pyproject.toml /src/
COPY durable_agents /src/durable_agents
COPY workflows /src/workflows
COPY activities /src/activities
COPY live /src/live
COPY sandboxes /src/sandboxes
RUN pip install --no-cache-dir /src && rm -rf /src
WORKDIR /app
COPY worker.py starter.py ./
COPY agents ./agents
ENTRYPOINT ["python", "worker.py"]
