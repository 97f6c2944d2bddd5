# Build stage: a wheel of the project and its dependencies.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY providers ./providers
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Final stage: no compilers, a non-root user.
FROM python:3.12-slim
RUN useradd --system --home /var/lib/otp-gateway --create-home otp
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER otp
WORKDIR /var/lib/otp-gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz').status == 200 else 1)"
ENTRYPOINT ["otp-gateway"]
CMD ["serve", "--config", "/etc/otp-gateway/config.toml"]
