# One image for the migration, the API, the dispatcher and CPU workers. GPU workers are built
# from deploy/worker.Dockerfile (a CUDA base image, tuneyard, your code and its requirements).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY tuneyard ./tuneyard
COPY examples ./examples
# Installed as root, so the code is read-only to the user the services run as.
RUN pip install --no-cache-dir -e '.[examples]'
# The services run as an unprivileged user; /data (the API's checkpoints) is all it writes.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /data tuneyard \
    && mkdir /data && chown tuneyard:tuneyard /data && chmod 0700 /data
USER 10001:10001
ENV TUNEYARD_HOST=0.0.0.0 TUNEYARD_DATA_DIR=/data HOME=/data
EXPOSE 8765
CMD ["tuneyard", "server", "--host", "0.0.0.0", "--port", "8765"]
