# syncbridge with SQL Server support: pyodbc + unixODBC + Microsoft ODBC Driver 18.
# Used by docker-compose.yml for the bridge and the webhook app.
FROM python:3.11-slim-bookworm

ARG DEBIAN_FRONTEND=noninteractive
# msodbcsql18 comes from Microsoft's apt repository, not Debian's archive:
# packages-microsoft-prod.deb installs that repository and its signing key.
# ACCEPT_EULA=Y accepts the driver's licence (required to install it).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl unixodbc \
 && curl -fsSL -o /tmp/packages-microsoft-prod.deb \
      https://packages.microsoft.com/config/debian/12/packages-microsoft-prod.deb \
 && dpkg -i /tmp/packages-microsoft-prod.deb && rm /tmp/packages-microsoft-prod.deb \
 && apt-get update \
 && ACCEPT_EULA=Y apt-get install -y --no-install-recommends msodbcsql18 \
 && apt-get purge -y curl && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine engine
COPY bridge bridge
COPY sql sql
COPY migrations migrations
RUN pip install --no-cache-dir '.[sqlserver]' \
 && python -c "import pyodbc; assert 'ODBC Driver 18 for SQL Server' in pyodbc.drivers()"

RUN useradd --system --home /var/lib/syncbridge syncbridge
USER syncbridge
WORKDIR /var/lib/syncbridge
ENV SYNCBRIDGE_CONFIG=/etc/syncbridge/syncbridge.toml \
    SYNCBRIDGE_LOG_FORMAT=json
ENTRYPOINT ["syncbridge"]
CMD ["run"]
