# The orderview image for compose.yaml: one image, the command picks the role.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orderview orderview
COPY projector projector
COPY api api
COPY emulator emulator
COPY schemas schemas
COPY sql sql
COPY ui ui
COPY examples examples
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin orderview
# Nothing here needs root: the services run as an unprivileged user.
USER 10001
ENV ORDERVIEW_API_HOST=0.0.0.0
