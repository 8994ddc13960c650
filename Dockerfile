# pullauth agent image: a statically linked binary on an empty base.
#
#   docker build -t pullauth --build-arg PULLAUTH_GIT_HASH=$(git rev-parse --short=8 HEAD) .
#   docker run -d --name pullauth --restart unless-stopped --net host \
#     --env-file /etc/ecs/ecs.config -e ECS_DATADIR=/data \
#     -v /var/run/docker.sock:/var/run/docker.sock -v /var/lib/ecs/data:/data \
#     pullauth
#
# The final image holds nothing but the binary: no shell, no package manager.

FROM rust:1-bookworm AS build
ARG PULLAUTH_GIT_HASH=unknown
ENV PULLAUTH_GIT_HASH=${PULLAUTH_GIT_HASH}
WORKDIR /src
COPY . .
# +crt-static links glibc statically, so the binary runs on `scratch`.
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p pullauth --target x86_64-unknown-linux-gnu \
 && cp target/x86_64-unknown-linux-gnu/release/pullauth /pullauth

FROM scratch
COPY --from=build /pullauth /pullauth
ENV ECS_DATADIR=/data
VOLUME ["/data"]
EXPOSE 51678
ENTRYPOINT ["/pullauth", "serve"]
