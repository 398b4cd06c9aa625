# One image for all five functions; the container's command picks one (k8s/base/functions/*.yaml):
#   uvicorn functions.<name>.app:app --host 0.0.0.0 --port <port>
# The base by digest, as a tag can be moved to another image: python:3.11-slim as published on
# 2026-08-05 (Python 3.11.15 on Debian trixie; the digest is the multi-platform index recorded in
# docker-library/repo-info, repos/python/remote/3.11-slim.md). To move it on, take the digest that
# `docker buildx imagetools inspect python:3.11-slim` prints. A build that cannot reach Docker Hub
# names a stand-in with --build-arg PYTHON_IMAGE=... (the local cluster's e2e does, k8s/images/python).
ARG PYTHON_IMAGE=python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Non-root, numeric so Kubernetes' runAsNonRoot can check it (the pods run as the same uid).
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin shop

# The dependencies exactly as locked (versions and file hashes: requirements.lock), then the shop
# itself without resolving anything again. Only what that needs is copied (.dockerignore keeps
# the rest out); the sources are removed afterwards so the functions run from site-packages.
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY functions ./functions
RUN pip install --require-hashes -r requirements.lock && pip install --no-deps . && rm -rf /src

# The pods mount an emptyDir here; the root filesystem is read-only in the cluster.
WORKDIR /tmp
USER 10001:10001
EXPOSE 8001 8002 8003 8004 8005
CMD ["uvicorn", "functions.users.app:app", "--host", "0.0.0.0", "--port", "8001"]
