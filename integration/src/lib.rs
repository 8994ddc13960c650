//! Test infrastructure for pullauth's integration tests.
//!
//! It gives tests real counterparts of everything the ECS agent's image-pull
//! authentication talks to, all on this machine and without network access:
//!
//! * [`Engine`]: a Docker engine (an existing one, the one named by
//!   `PULLAUTH_TEST_DOCKER_HOST`, or a private `dockerd` started here);
//! * [`Registry`]: Debian's `docker-registry` (distribution v2.8) with
//!   htpasswd Basic auth on a loopback port, whose log tells which user
//!   authenticated each request;
//! * fixture images built from a static busybox and pushed with
//!   [`Harness::push_fixture`];
//! * [`Moto`]: moto, the AWS emulation, on a loopback port (installed
//!   with pip into a cached venv), and [`Imds`], a minimal IMDSv2;
//! * [`Stall`]: a TCP peer that never answers; [`pullauth_bin`]: the binary
//!   under test, freshly built.
//!
//! [`Harness::get`] starts the engine and two registries once per test
//! process. Every helper process is stopped when the test process exits,
//! and killed by the kernel if it dies (see the `process` module source).
//! Missing Debian packages are installed with apt-get when running as root.
//!
//! Nothing is installed or started unless `PULLAUTH_INTEGRATION=1`
//! (`integration/test` sets it): without it, the first harness call ends
//! the test process with one "skipped" line on stderr, so a plain `cargo
//! test` runs only unit and in-process tests (see [`require_opt_in`]).
//!
//! Set `PULLAUTH_TEST_DOCKER_HOST` to make every test process share one
//! engine (`integration/test` does); otherwise each test process uses the
//! default engine if `docker info` works there, or starts its own dockerd.
//!
//! ```no_run
//! use pullauth_integration::Harness;
//!
//! let h = Harness::get();
//! let alice = ("alice", h.alpha.password("alice"));
//! let digest = h.push_fixture(&h.alpha, "team/app", "v1", alice);
//! let image = h.alpha.image_ref("team/app", "v1");
//!
//! let mark = h.alpha.log_mark();
//! let config = h.login_config(&h.alpha, "bob", h.alpha.password("bob"));
//! h.docker_pull(config.path(), &image).expect("pull");
//! assert!(h.alpha.users_since(mark).iter().all(|u| u == "bob"));
//! assert!(digest.starts_with("sha256:"));
//! ```

pub mod agent;
mod bin;
mod boto3;
mod ecs_stub;
mod engine;
mod harness;
pub mod http;
mod loopback;
mod moto;
mod opt_in;
mod outcome;
mod process;
mod registry;
mod s3_stub;
mod stall;
mod sys;
mod util;

pub use bin::{pullauth_bin, pullauth_command, static_pullauth_bin};
pub use ecs_stub::{ECS_STUB_SERVICE_ARN, EcsAgentStub, EcsStub};
pub use engine::{DOCKER_HOST_ENV, Engine, Frozen, PrivateEngine};
pub use harness::Harness;
pub use moto::{
    Imds, ImdsCredentials, MOTO_ACCESS_KEY, MOTO_VERSION, Moto, pullauth_aws_env, venv_python,
};
pub use opt_in::{OPT_IN_ENV, require_opt_in};
pub use outcome::{Outcome, Spawned};
pub use registry::{Held, Registry};
pub use s3_stub::{S3Mode, S3Stub};
pub use stall::Stall;
pub use sys::raise_fd_limit;
pub use util::{ensure_tools, free_port, http_get_status};
