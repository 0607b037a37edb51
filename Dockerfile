# One image for the api, the scheduler and CPU workers. GPU workers build FROM a CUDA image
# with the same two RUN lines.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY tuneyard ./tuneyard
COPY examples ./examples
RUN pip install --no-cache-dir -e '.[examples]'
ENV TUNEYARD_HOST=0.0.0.0
EXPOSE 8765
CMD ["tuneyard", "server", "--host", "0.0.0.0", "--port", "8765"]
