# function-fabric's runtime image: the `fabric` binary on distroless, running
# `fabric function` as a non-root user on port 9443. Crossplane's function
# runtime mounts the mTLS certificates and sets TLS_SERVER_CERTS_DIR.
#
#   docker build -t function-fabric-runtime .
#   docker run --rm -p 9443:9443 function-fabric-runtime --insecure   # local try-out

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# aws-lc-sys (the TLS library under gRPC) compiles C code; the rust image has gcc.
RUN cargo build --release --locked -p fabric --bin fabric \
 && install -D -m 0755 target/release/fabric /out/fabric

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/fabric /usr/local/bin/fabric
# distroless' nonroot user. Crossplane runs package pods as 2000:2000
# (RunAsUser/RunAsGroup in its package runtime) whatever the image says;
# the function writes no files and needs no home directory, so either
# works, and the image test runs it as both.
USER 65532:65532
EXPOSE 9443
ENTRYPOINT ["/usr/local/bin/fabric", "function"]
