# The worker image (harness and sandbox workers, and the live server), for docker-compose.yml.
# With a registry: python:3.11-slim. Offline: BASE_IMAGE=durable-agents/python:3.11, which
# deploy/images/build.sh builds on the debootstrap base (make compose-up).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
# The package is built from /src and installed into site-packages. Neither the sources nor the
# scripted test model (durable_agents.testing, which the demo and the tests use) stay in the image:
# production workers talk to the real model API.
COPY pyproject.toml /src/
COPY durable_agents /src/durable_agents
COPY workflows /src/workflows
COPY activities /src/activities
COPY live /src/live
COPY sandboxes /src/sandboxes
RUN pip install --no-cache-dir /src \
 && rm -rf /src "$(python -c 'import durable_agents, pathlib; print(pathlib.Path(durable_agents.__file__).parent / "testing")')"
WORKDIR /app
COPY agents ./agents
# All runtime data under one directory (compose mounts its volumes there).
ENV DA_DATA_DIR=/data
ENTRYPOINT ["da-worker"]
