//! The seam between the agent and the engine: the agent asks a [`Puller`]
//! to get an image onto the host, and knows nothing else about Docker.
//! [`Engine`] is the real one; tests drive the agent's state machine with
//! their own, deterministically.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use pullauth_config::PullBehavior;
use pullauth_docker::{
    Engine, Obtained, Platform, PullError, PullEvent, PullOptions, Removal, Verified,
};
use pullauth_resolve::{Entry, ImageRef};

/// Gets images onto the host.
pub trait Puller: Send + Sync + 'static {
    /// Where the engine is, for logs.
    fn address(&self) -> &str;

    /// Gets `image` onto the host as `behavior` asks, with `entry`'s
    /// credentials (anonymously for `None`); see [`Engine::obtain`].
    fn obtain<'a>(
        &'a self,
        image: &'a ImageRef,
        entry: Option<&'a Entry>,
        behavior: PullBehavior,
        pulled_before: bool,
        options: &'a PullOptions,
        progress: &'a mut (dyn FnMut(PullEvent) + Send),
    ) -> BoxFuture<'a, Result<Obtained, PullError>>;

    /// Asks the registry whether `entry`'s credentials may read `image`,
    /// without pulling it; see [`Engine::verify`].
    fn verify<'a>(
        &'a self,
        image: &'a ImageRef,
        entry: Option<&'a Entry>,
    ) -> BoxFuture<'a, Result<Verified, PullError>>;

    /// The engine's ID of the image `reference` names, or `None` when the
    /// engine does not have it (one bounded inspect); see
    /// [`Engine::image_id`]. The cluster follower asks this of the images
    /// it believes warm, to pull again one that was removed.
    fn image_id<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, PullError>>;

    /// Where the engine runs images (architecture and OS); see
    /// [`Engine::platform`]. Prefetch decides `runtimePlatform` with it.
    fn platform(&self) -> BoxFuture<'_, Result<Platform, PullError>>;

    /// Tags the image `source` names as `target` (one bounded call); see
    /// [`Engine::tag`].
    fn tag<'a>(
        &'a self,
        source: &'a str,
        target: &'a ImageRef,
    ) -> BoxFuture<'a, Result<(), PullError>>;

    /// The size on disk of the image `reference` names, if the engine has
    /// it; see [`Engine::image_size`].
    fn image_size<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, PullError>>;

    /// Removes the name `reference`, never forcing (the engine keeps an
    /// image a container uses); see [`Engine::remove_image`].
    fn remove_image<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<Removal, PullError>>;
}

impl Puller for Engine {
    fn address(&self) -> &str {
        Engine::address(self)
    }

    fn obtain<'a>(
        &'a self,
        image: &'a ImageRef,
        entry: Option<&'a Entry>,
        behavior: PullBehavior,
        pulled_before: bool,
        options: &'a PullOptions,
        progress: &'a mut (dyn FnMut(PullEvent) + Send),
    ) -> BoxFuture<'a, Result<Obtained, PullError>> {
        Engine::obtain(
            self,
            image,
            entry,
            behavior,
            pulled_before,
            options,
            progress,
        )
        .boxed()
    }

    fn verify<'a>(
        &'a self,
        image: &'a ImageRef,
        entry: Option<&'a Entry>,
    ) -> BoxFuture<'a, Result<Verified, PullError>> {
        Engine::verify(self, image, entry).boxed()
    }

    fn image_id<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, PullError>> {
        Engine::image_id(self, reference).boxed()
    }

    fn platform(&self) -> BoxFuture<'_, Result<Platform, PullError>> {
        Engine::platform(self).boxed()
    }

    fn tag<'a>(
        &'a self,
        source: &'a str,
        target: &'a ImageRef,
    ) -> BoxFuture<'a, Result<(), PullError>> {
        Engine::tag(self, source, target).boxed()
    }

    fn image_size<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, PullError>> {
        Engine::image_size(self, reference).boxed()
    }

    fn remove_image<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<Removal, PullError>> {
        Engine::remove_image(self, reference).boxed()
    }
}
