# tether in a container: a static binary on a distroless base, run as a
# non-root user.
#
#   docker build -t tether --build-arg VERSION=$(git describe --tags --always --dirty) .
#   docker run --rm --ulimit nofile=1048576:1048576 --stop-timeout 35 \
#     -p 9501:9501 -p 9502:9502 -v tether-data:/var/lib/tether tether
#
# The defaults serve TCP clients on 9501, WebSocket clients and the chat
# page on 9502, with the embedded NATS inside the container. A
# configuration file: mount it and name it in TETHER_CONFIG (the
# healthcheck's `tether status` then reads the same one):
#   -v $PWD/tether.yaml:/etc/tether/tether.yaml:ro -e TETHER_CONFIG=/etc/tether/tether.yaml

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: a change to the sources alone does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The version `tether version` and the status API report. .git is not
# copied (.dockerignore), so the toolchain records no commit: give it here.
ARG VERSION=
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/tether ./cmd/tether
# The working directory of the runtime image (pid file, history store),
# owned by its user: distroless has no shell to make it there.
RUN mkdir -p /out/var/lib/tether

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tether /usr/local/bin/tether
COPY --from=build --chown=65532:65532 /out/var/lib/tether /var/lib/tether
# nonroot: uid and gid 65532.
USER 65532:65532
WORKDIR /var/lib/tether
# Where serve writes its pid and status (the healthcheck) reads it: a
# relative pid_file would be beside the configuration file, in a
# directory this user may not write (/etc/tether).
ENV TETHER_PID_FILE=/var/lib/tether/tether.pid
# The rooms' history (nats.embedded.store_dir, tether-data/ here).
VOLUME /var/lib/tether
# 9501 TCP clients, 9502 WebSocket clients and the chat page. The admin
# server (9600) listens on the container's loopback by default: to
# publish it, set http.address to 0.0.0.0:9600 and http.token.
EXPOSE 9501 9502
# shutdown.timeout is 30s: give `docker stop` longer (--stop-timeout 35).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s CMD ["/usr/local/bin/tether", "status"]
ENTRYPOINT ["/usr/local/bin/tether"]
CMD ["serve"]
