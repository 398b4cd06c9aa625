# One image for all five functions; the container's command picks one (k8s/base/functions/*.yaml):
#   uvicorn functions.<name>.app:app --host 0.0.0.0 --port <port>
FROM python:3.11-slim

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
