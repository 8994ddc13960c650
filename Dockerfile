# pullauth agent image: a statically linked binary on an empty base.
#
#   docker build -t pullauth --build-arg PULLAUTH_GIT_HASH=$(git rev-parse --short=8 HEAD) .
#   docker run -d --name pullauth --restart unless-stopped --net host \
#     -v /etc/ecs:/etc/ecs:ro \
#     -v /var/run/docker.sock:/var/run/docker.sock -v /var/lib/ecs/data:/data \
#     pullauth
#
# The agent reads /etc/ecs/ecs.config as a file (the default arguments
# below), so editing it on the host and `docker kill -s HUP pullauth`
# reloads it. Mount the directory, not the file: editors and config tools
# replace a file by renaming a new one over it, and a single-file bind mount
# keeps showing the old inode. A file read this way is also not copied into
# the container's environment, where `docker inspect` would show it.
# `docker run --env-file /etc/ecs/ecs.config pullauth` (no mount) still
# works: the file is optional, and the environment alone is used; SIGHUP
# then only logs that there is nothing to re-read.
#
# The final image holds nothing but the binary and Debian's CA bundle: no
# shell, no package manager.
#
# AWS endpoints: TLS roots come from /etc/ssl/certs/ca-certificates.crt
# (the build stage's ca-certificates; SSL_CERT_FILE or a mount replaces it),
# and `-e AWS_CA_BUNDLE=/path/ca.pem` with that file mounted adds a private
# CA (a proxy, a private endpoint). Host names resolve through the static
# glibc's built-in files and dns sources, using the /etc/hosts and
# /etc/resolv.conf Docker provides (--add-host and --dns work); no NSS
# module or nsswitch.conf is needed.

FROM rust:1-bookworm AS build
ARG PULLAUTH_GIT_HASH=unknown
ENV PULLAUTH_GIT_HASH=${PULLAUTH_GIT_HASH}
WORKDIR /src
COPY . .
# +crt-static links glibc statically, so the binary runs on `scratch` (and
# on any host's glibc, Amazon Linux 2's 2.26 included). The result is a
# static PIE (still placed at a random address), and pack-relative-relocs
# stores its ~23,000 relative relocations as RELR (7 KB) instead of RELA
# (550 KB), which start-up would otherwise read page by page: with no shared
# libc mapped either, the idle agent's RSS drops by about 1.7 MiB (see
# BENCHMARKS.md, issue 18). integration/test builds with the same two flags.
# --icf=all lets the linker (rust-lld, the toolchain's default here) fold
# functions whose machine code is identical into one copy: about 88 KB of
# the release binary. The tests' debug builds leave it out, so their
# backtraces keep every function's own name.
RUN RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs -C link-arg=-Wl,--icf=all" \
    cargo build --release --locked -p pullauth --target x86_64-unknown-linux-gnu \
 && cp target/x86_64-unknown-linux-gnu/release/pullauth /pullauth

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /pullauth /pullauth
ENV ECS_DATADIR=/data
# glibc's per-thread caches of freed blocks keep pages of the heap that
# malloc_trim could otherwise return after a burst: 30 s after 30,000
# tasks the agent holds 14 MiB with them off, 18 MiB with them on
# (BENCHMARKS.md, issue 26). Outside this image, set it in the unit.
ENV GLIBC_TUNABLES=glibc.malloc.tcache_count=0
VOLUME ["/data"]
EXPOSE 51678
ENTRYPOINT ["/pullauth", "serve"]
CMD ["--env-file", "/etc/ecs/ecs.config", "--env-file-optional"]
