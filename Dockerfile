# The control plane's image: `molecule api` and `molecule worker` (see docker-compose.yml).
# Pinned base; build with `docker compose build`.
FROM python:3.11.10-slim-bookworm

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY activities activities
COPY agent agent
COPY api api
COPY backends backends
COPY domain domain
COPY molecule molecule
COPY store store
COPY templates templates
COPY workers workers
COPY workflows workflows
RUN pip install . && useradd --system --uid 10001 --home /var/lib/molecule --create-home molecule

USER molecule
ENV MOLECULE_DATA_DIR=/var/lib/molecule TEMPLATES_DIR=/app/templates
ENTRYPOINT ["molecule"]
CMD ["--help"]
