# slimserve image, two stages:
#   builder  torch (CPU) + the compressor: exports the default variants to /models
#   serve    ONNX Runtime, OpenVINO, tokenizers and the web stack only (no torch, no transformers)
# Build: docker build -t slimserve .
# Where download.pytorch.org is out of reach, put the CPU wheel of torch 2.13.0 in
# docker/wheels/ and build with --build-arg TORCH_INDEX=https://pypi.org/simple.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY docker/wheels/ /wheels/
# Pinned and from the CPU index: a looser spec pulls several GB of CUDA wheels.
RUN pip install --find-links /wheels --index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY compressor compressor
COPY service service
COPY variant variant
# OpenVINO too: build-default records the int8 variants for it where it is installed.
RUN pip install ".[compress,serve,openvino]"
RUN compressor build-default --out /models

FROM ${PYTHON_IMAGE} AS serve
# PATH spelled out: the official image sets it, a locally imported stand-in may not.
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml ./
# The serving dependencies, read from pyproject.toml so they are listed in one place.
# OpenVINO is one of them (the [openvino] extra): it adds about 180 MB to the image.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; \
print('\n'.join(p['dependencies'] + x['serve'] + x['openvino']))" > requirements.txt \
 && pip install -r requirements.txt \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin slimserve
COPY variant variant
COPY service service
COPY --from=builder --chown=10001:10001 /models /models
USER 10001
ENV SLIMSERVE_MODELS=/models SLIMSERVE_HOST=0.0.0.0 SLIMSERVE_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2)"
CMD ["python", "-m", "service"]
