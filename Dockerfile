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
RUN pip install --no-cache-dir .
ENV ORDERVIEW_API_HOST=0.0.0.0
