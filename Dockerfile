# The gateway with the example models, as a non-root process on port 8000.
#
#   docker build -t onnx-gateway .
#   docker run --rm -p 8000:8000 onnx-gateway
#   docker run --rm -p 8000:8000 -v "$PWD/models:/models:ro" onnx-gateway   # your models
#
# Configuration: GATEWAY_* variables (see the README's configuration reference). Logs are
# JSON lines (GATEWAY_LOG_FORMAT=text for plain ones). No features file is set here: a
# model with [features] reads Redis (GATEWAY_REDIS_URL), GATEWAY_FEATURES_FILE, or the
# file its own [features] file names (the bundled fraud model: its entities.csv).

# -- build: a wheel of the gateway and of every dependency --------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# -- run: the wheels installed, no compiler, no sources ------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    GATEWAY_MODEL_REPOSITORY=/models \
    GATEWAY_LOG_FORMAT=json
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# the example repository; mount a volume on /models to serve your own
COPY models/digits /models/digits
COPY models/fraud /models/fraud
USER 10001
# 8001: gRPC, when GATEWAY_GRPC_PORT=8001 (deploy/k8s sets it)
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('GATEWAY_PORT', '8000'), timeout=2)"]
# SIGTERM: the gateway stops accepting, drains (GATEWAY_DRAIN_TIMEOUT) and exits 0
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["serve"]
