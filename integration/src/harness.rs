//! The per-process test harness: one engine, two authenticated registries,
//! and fixture images pushed to them.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tempfile::TempDir;

use crate::{Engine, Registry, engine, util};

/// Everything an integration test needs, started once per test process.
#[derive(Debug)]
pub struct Harness {
    /// The Docker engine that pulls go to.
    pub engine: Engine,
    /// Registry with two users, `alice` and `bob` (random passwords).
    pub alpha: Registry,
    /// A second registry with one different user, `carol` (random password).
    pub beta: Registry,
}

static HARNESS: OnceLock<Result<Harness, String>> = OnceLock::new();

impl Harness {
    /// The shared harness, started on first use; later calls (from any test
    /// thread) get the same one. If starting failed, every call panics with
    /// the original message instead of retrying.
    pub fn get() -> &'static Harness {
        crate::require_opt_in();
        let result = HARNESS.get_or_init(|| {
            std::panic::catch_unwind(Harness::start).map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_else(|| "unknown panic".into())
            })
        });
        match result {
            Ok(harness) => harness,
            Err(msg) => panic!("the integration harness failed to start: {msg}"),
        }
    }

    fn start() -> Harness {
        util::sweep_stale_dirs();
        let started = Instant::now();
        let alice = util::random_token(24);
        let bob = util::random_token(24);
        let carol = util::random_token(24);
        // The engine takes about a second; start the registries meanwhile.
        let (engine, alpha, beta) = std::thread::scope(|s| {
            let alpha = s.spawn(|| Registry::start("alpha", &[("alice", &alice), ("bob", &bob)]));
            let beta = s.spawn(|| Registry::start("beta", &[("carol", &carol)]));
            let engine = Engine::start_or_reuse();
            let join = |h: std::thread::ScopedJoinHandle<'_, Registry>| {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
            };
            (engine, join(alpha), join(beta))
        });
        eprintln!(
            "pullauth-integration: harness ready in {:?} (engine {})",
            started.elapsed(),
            engine.docker_host()
        );
        Harness {
            engine,
            alpha,
            beta,
        }
    }

    /// Starts an extra registry that accepts exactly `users` (for tests that
    /// need specific passwords or want to stop/restart their registry).
    pub fn registry_with(users: &[(&str, &str)]) -> Registry {
        crate::require_opt_in();
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        Registry::start(&format!("extra{n}"), users)
    }

    /// The engine address, e.g. `unix:///tmp/.../docker.sock`.
    pub fn docker_host(&self) -> &str {
        self.engine.docker_host()
    }

    /// The engine's Unix socket path, to mount into a container as
    /// /var/run/docker.sock; panics for a `tcp://` engine.
    pub fn engine_socket(&self) -> &str {
        self.docker_host()
            .strip_prefix("unix://")
            .expect("the harness engine listens on a unix socket")
    }

    /// A `docker` CLI command aimed at the engine with an empty client config.
    pub fn docker(&self) -> Command {
        self.engine.docker()
    }

    /// A fresh docker client config dir without credentials. Whatever
    /// `docker login` adds to it stays in its `config.json`, whichever
    /// credential helpers the machine has.
    pub fn docker_config(&self) -> TempDir {
        engine::client_config("docker-config")
    }

    /// Logs in to `registry` with `docker --config config_dir login`, so the
    /// engine gets these credentials on later CLI calls using that config.
    /// Returns the CLI's error output when the login is rejected.
    ///
    /// A `config_dir` without `config.json` gets one that keeps the
    /// credentials in that file (as [`Harness::docker_config`] has), so the
    /// login never depends on the machine's default credential store.
    ///
    /// The docker CLI strips one trailing newline / carriage return from the
    /// password it reads, so such passwords cannot be used here.
    pub fn docker_login(
        &self,
        config_dir: &Path,
        registry: &Registry,
        user: &str,
        password: &str,
    ) -> Result<(), String> {
        engine::pin_credential_storage(config_dir);
        let out = util::run(
            self.docker()
                .arg("--config")
                .arg(config_dir)
                .args(["login", "--username", user, "--password-stdin"])
                .arg(registry.addr()),
            password.as_bytes(),
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A fresh docker client config dir logged in to `registry` as `user`;
    /// panics when the login fails.
    pub fn login_config(&self, registry: &Registry, user: &str, password: &str) -> TempDir {
        let dir = self.docker_config();
        if let Err(e) = self.docker_login(dir.path(), registry, user, password) {
            panic!(
                "docker login to {} as {user:?} failed: {e}",
                registry.addr()
            );
        }
        dir
    }

    /// `docker --config config_dir pull image_ref`; returns the CLI's error
    /// output when the pull fails.
    pub fn docker_pull(&self, config_dir: &Path, image_ref: &str) -> Result<(), String> {
        let out = util::run(
            self.docker()
                .arg("--config")
                .arg(config_dir)
                .args(["pull", "--quiet", image_ref]),
            b"",
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Builds a tiny image (static busybox plus a file unique to this call),
    /// pushes it to `registry` as `repository:tag` with the given credentials
    /// and returns the manifest digest (`sha256:...`). The local copy is
    /// removed afterwards, so a later pull really goes to the registry.
    pub fn push_fixture(
        &self,
        registry: &Registry,
        repository: &str,
        tag: &str,
        user_password: (&str, &str),
    ) -> String {
        self.push_image(registry, repository, tag, user_password, 0)
    }

    /// Like [`Harness::push_fixture`], but the image's one layer also holds
    /// `/random.bin` with `megabytes` MiB of random (incompressible) data,
    /// so that pulling it takes a while: for tests that break something in
    /// the middle of a pull.
    pub fn push_large_fixture(
        &self,
        registry: &Registry,
        repository: &str,
        tag: &str,
        user_password: (&str, &str),
        megabytes: usize,
    ) -> String {
        self.push_image(registry, repository, tag, user_password, megabytes)
    }

    fn push_image(
        &self,
        registry: &Registry,
        repository: &str,
        tag: &str,
        user_password: (&str, &str),
        random_megabytes: usize,
    ) -> String {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let image = registry.image_ref(repository, tag);
        let work = util::temp_dir("fixture");
        let tarball = build_rootfs_tar(
            work.path(),
            &format!(
                "pullauth fixture {image} #{} pid {} nonce {}\n",
                COUNT.fetch_add(1, Ordering::Relaxed),
                std::process::id(),
                util::random_token(16)
            ),
            random_megabytes,
        );
        util::run_ok(
            self.docker()
                .args(["import", "--change", r#"CMD ["/bin/sh"]"#])
                .arg(&tarball)
                .arg(&image),
            b"",
        );
        let config = work.path().join("docker-config");
        fs::create_dir(&config).expect("cannot create docker config dir");
        let (user, password) = user_password;
        if let Err(e) = self.docker_login(&config, registry, user, password) {
            self.remove_local(&image);
            panic!(
                "push_fixture: docker login to {} as {user:?} failed: {e}",
                registry.addr()
            );
        }
        let out = util::run(
            self.docker()
                .arg("--config")
                .arg(&config)
                .arg("push")
                .arg(&image),
            b"",
        );
        self.remove_local(&image);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "docker push {image} failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Last line: "TAG: digest: sha256:... size: N".
        let words: Vec<&str> = stdout.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[0] == "digest:" && w[1].starts_with("sha256:"))
            .map_or_else(
                || panic!("no digest in docker push output:\n{stdout}"),
                |w| w[1].to_string(),
            )
    }

    /// Removes an image from the engine (`docker rmi -f`); an image that is
    /// not there is fine.
    pub fn remove_local(&self, image_ref: &str) {
        let out = util::run(self.docker().args(["rmi", "--force", image_ref]), b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.to_ascii_lowercase().contains("no such image"),
            "docker rmi {image_ref} failed: {stderr}"
        );
    }

    /// The engine's image id (`sha256:...`) for `image_ref`, or `None` when
    /// the engine does not have it.
    pub fn local_image_id(&self, image_ref: &str) -> Option<String> {
        let out = util::run(
            self.docker()
                .args(["image", "inspect", "--format", "{{.Id}}", image_ref]),
            b"",
        );
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.to_ascii_lowercase().contains("no such image"),
            "docker image inspect {image_ref} failed: {stderr}"
        );
        None
    }
}

/// Writes `rootfs.tar` in `work` holding /bin/busybox, /bin/sh -> busybox,
/// /etc/pullauth-fixture with `marker` and, when `random_megabytes` is not
/// zero, /random.bin with that many MiB from /dev/urandom; returns its path.
fn build_rootfs_tar(work: &Path, marker: &str, random_megabytes: usize) -> PathBuf {
    util::ensure_tools(&[("busybox", "busybox-static"), ("tar", "tar")]);
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| util::which("busybox"))
        .expect("busybox was just ensured");
    let root = work.join("rootfs");
    fs::create_dir_all(root.join("bin")).expect("cannot create rootfs/bin");
    fs::create_dir_all(root.join("etc")).expect("cannot create rootfs/etc");
    fs::copy(&busybox, root.join("bin/busybox")).expect("cannot copy busybox");
    symlink("busybox", root.join("bin/sh")).expect("cannot create /bin/sh link");
    fs::write(root.join("etc/pullauth-fixture"), marker).expect("cannot write marker");
    if random_megabytes > 0 {
        let mut source = fs::File::open("/dev/urandom").expect("cannot open /dev/urandom");
        let mut file = fs::File::create(root.join("random.bin")).expect("cannot create random.bin");
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..random_megabytes {
            source
                .read_exact(&mut chunk)
                .expect("cannot read /dev/urandom");
            file.write_all(&chunk).expect("cannot write random.bin");
        }
    }
    let tarball = work.join("rootfs.tar");
    util::tar_dir(&root, &tarball);
    tarball
}
