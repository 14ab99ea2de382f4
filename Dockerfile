# ZenConn's image: a static binary on scratch, run as a non-root user.
#   docker build --build-arg VERSION=$(git describe --always) --build-arg COMMIT=$(git rev-parse HEAD) -t zenconn .
# Used by docker-compose.yml; see README "Deploy with Docker Compose".

FROM golang:1.26-bookworm AS build
WORKDIR /src
# The module download is a layer of its own: it is reused until go.mod or
# go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
ARG COMMIT=unknown
# The compiler's cache outlives the build where the builder keeps cache
# mounts (BuildKit, podman); the image does not depend on it.
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/zenconn ./cmd/zenconn \
 && /out/zenconn version \
 && mkdir -p /out/data

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/zenconn /zenconn
COPY public /public
# /data belongs to the user the node runs as; a named volume mounted
# there starts as a copy of it, with its owner.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["/zenconn", "healthcheck"]
# Flags given to the container (compose's command) come after these and
# override them.
ENTRYPOINT ["/zenconn", "serve", "--addr", "0.0.0.0:8080", "--data", "/data", "--public", "/public"]
