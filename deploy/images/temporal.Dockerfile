# The Temporal server v1.29.1 with its SQL tool, the CLI and the Web UI server: the binaries
# `go install` built on the host (scripts/cluster.sh install), run by scripts/cluster.sh against
# the compose stack's PostgreSQL. Context: the staging directory deploy/images/build.sh fills.
FROM durable-agents/sandbox:latest
USER root
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/*
COPY cache /opt/temporal
COPY app /app
WORKDIR /app
ENV DA_CACHE_DIR=/opt/temporal DA_CLUSTER_BIND=0.0.0.0 DA_CLUSTER_DATA=/data/temporal PATH=/app/.bin:/usr/bin:/bin
ENTRYPOINT ["bash", "scripts/cluster.sh", "run"]
