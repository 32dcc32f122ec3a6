# Stand-in for python:3.11-slim where no registry can be reached: Debian's own
# Python 3.11 (with venv and pip) on a debootstrap minbase, laid out like the
# official image (/usr/local/bin/python3). Built by tests/containers/standins.py.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
ENV LANG=C.UTF-8
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python3 \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python
# pip inside a build trusts the certificate store of the host that builds it.
# Only this local base carries it: the project's Dockerfiles stay as users elsewhere need them.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
