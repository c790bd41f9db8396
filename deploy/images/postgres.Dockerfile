# PostgreSQL for the compose stack: Debian's, on the debootstrap base the sandbox image is built
# from (no registry needed; apt reaches Debian's mirror).
FROM durable-agents/sandbox:latest
USER root
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/*
# A named volume mounted here takes this directory's owner: PostgreSQL's.
RUN install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/
ENV PGDATA=/var/lib/postgresql/data PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin
USER postgres
ENTRYPOINT ["bash", "/usr/local/bin/postgres-entrypoint.sh"]
