# A Python 3.11 base for the worker image (Dockerfile, BASE_IMAGE) without a registry: Debian's
# python3 and pip on the debootstrap base. ca-certificates.crt is the host's bundle, so pip
# trusts what the host trusts (a TLS-intercepting proxy to PyPI included).
FROM durable-agents/sandbox:latest
USER root
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_BREAK_SYSTEM_PACKAGES=1 PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1
