# Glotta on a DGX: NGC's Triton (with the TensorRT-LLM and Python backends) serving the model repository, and the
# Glotta gateway in front of it (REST on :5000, gRPC on :50051). Triton's own ports stay open for operators.
#   docker build -t glotta .
#   docker run --gpus all -p 5000:5000 -p 50051:50051 glotta
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-trtllm-python-py3
FROM ${TRITON_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    GLOTTA_MODEL_REPOSITORY=/models \
    GLOTTA_CACHE=/var/cache/glotta \
    TRITONSERVER=/opt/tritonserver/bin/tritonserver

WORKDIR /opt/glotta
COPY pyproject.toml README.md ./
COPY core ./core
COPY modeling ./modeling
COPY server ./server
COPY clients ./clients
COPY export ./export
COPY training ./training
COPY loadtests ./loadtests
COPY cli ./cli
# The package carries the demo models as its own repository (what `glotta serve` finds without a setting); at run
# time GLOTTA_MODEL_REPOSITORY=/models is the repository, where engines are mounted.
COPY model_repository ./model_repository
# The image's own Python packages stay exactly as NVIDIA built them (TensorRT-LLM's transformers refuses another
# tokenizers; trtllm-build needs them): the gateway gets a virtual environment of its own, made from the image's
# Python (the NGC base has no ensurepip: python3-venv brings it), with its serving dependencies (no torch). Triton's
# Python-backend stub runs on that venv too: Glotta's launcher puts the venv's bin first on PATH, where the stub
# finds its Python (same version, so the stub's libpython matches), and the CPU models and the pre/post-processing
# models import onnxruntime, tokenizers and Glotta from it. The image's Python gets only Glotta's code (--no-deps),
# for build.sh's conversion through TensorRT-LLM's Python API. The gRPC stubs are compiled now.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/glotta/venv \
    && /opt/glotta/venv/bin/pip install --no-cache-dir . \
    && /opt/glotta/venv/bin/python -c "from glotta.server.grpc_api import load_stubs; load_stubs()" \
    && python3 -m pip install --no-cache-dir --no-deps .

# Converted engines are mounted over the *-engine folders (see README, "Deploy on DGX"). The FasterTransformer
# ensemble is left out: FasterTransformer's backend last shipped in the 22.12 image, on Python 3.8, which cannot import
# Glotta (Python >= 3.10) for its pre/post-processing; this image is TensorRT-LLM's.
COPY model_repository /models
RUN rm -rf /models/glotta-fr-ft /models/glotta-fr-ft-*

EXPOSE 5000 50051 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://localhost:5000/health/ready"]

# `--engine triton` starts tritonserver on /models with the served models, waits for readiness, then runs the
# gateway in front of it; extra arguments pick models, e.g. `--model glotta-fr-trtllm`.
# NGC's entrypoint stays in front (CUDA forward compatibility, driver checks), then the gateway from its venv.
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh", "/opt/glotta/venv/bin/glotta", "serve", "--engine", "triton", \
            "--host", "0.0.0.0", "--port", "5000", "--triton-host", "0.0.0.0"]
CMD []
