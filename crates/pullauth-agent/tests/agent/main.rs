//! pullauth-agent's tests beyond its unit tests, as one test binary (each
//! binary links the crate and the AWS SDK; one link instead of four):
//! the agent in process against the engine seam, its HTTP server, the
//! cluster follower in paused time, and ECS answers from a stub.

mod ecs_answers;
mod follow;
mod in_process;
mod server;
mod stub;
