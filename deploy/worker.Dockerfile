# A GPU worker: a CUDA base image, Python, tuneyard, and the code your studies name
# (execution.entrypoint) with its requirements. Build it from the repository root:
#
#   docker build -f deploy/worker.Dockerfile -t tuneyard-worker .
#   docker run --gpus all -e TUNEYARD_API_URL=https://tuneyard.example.org \
#     -e TUNEYARD_REDIS_URL -e TUNEYARD_TOKEN -e TUNEYARD_ALLOW='myproj.train:*' tuneyard-worker
#
# (`-e NAME` without a value passes the variable from your shell, so the password and the
# token are not on the command line.) docker-compose.yml's worker service builds this file.
# One container serves every GPU of its host: `tuneyard worker --gpus auto` starts one
# process per GPU it sees, so run one per machine, not one per GPU.
#
# Pick the CUDA version your framework's wheels were built for and your driver supports.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1

WORKDIR /app
# tuneyard itself.
COPY pyproject.toml README.md alembic.ini ./
COPY tuneyard ./tuneyard
RUN pip install --no-cache-dir .

# Your code's requirements (a requirements.txt: PyTorch's CUDA wheels need its index, as in
# the default file), then your code. Replace both with your project's:
#   docker build --build-arg REQUIREMENTS=myproj/requirements.txt --build-arg CODE=myproj ...
# and let the workers run it: TUNEYARD_ALLOW='myproj.*'.
ARG REQUIREMENTS=deploy/worker-requirements.txt
COPY ${REQUIREMENTS} /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
ARG CODE=examples
COPY ${CODE} ./${CODE}

# The objectives run as this unprivileged user; /work holds trial work dirs and the cache
# of checkpoints. The code under /app stays read-only to it.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /work tuneyard \
    && mkdir /work && chown tuneyard:tuneyard /work && chmod 0700 /work
USER 10001:10001
ENV TUNEYARD_DATA_DIR=/work HOME=/work
CMD ["tuneyard", "worker", "--gpus", "auto", "--data-dir", "/work"]
