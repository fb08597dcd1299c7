# dm-jobd: the daemon image. Configure it with DM_JOBD_* (and dm-job's) environment variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DM_JOBD_STATE_DIR=/var/lib/dm-jobd DM_JOBD_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY plugins ./plugins
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/dm-jobd --create-home dmjobd

USER dmjobd
VOLUME ["/var/lib/dm-jobd"]
HEALTHCHECK --interval=15s --timeout=10s --start-period=20s --retries=3 CMD ["dm-jobd", "--timeout", "5", "health"]
CMD ["dm-jobd", "run"]
