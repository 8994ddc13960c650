//! `pullauth task run`: submit a task definition over the control socket.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use pullauth_config::Sources;
use serde_json::Value;

use super::say;
use super::serve::control_socket_path;
use crate::cli::{TaskCommand, TaskRunArgs};
use crate::exit::{self, UsageError};

/// How often `--wait` asks for the task's state.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

pub fn run(command: &TaskCommand) -> anyhow::Result<ExitCode> {
    match command {
        TaskCommand::Run(args) => run_task(args),
    }
}

fn run_task(args: &TaskRunArgs) -> anyhow::Result<ExitCode> {
    let body = if args.taskdef == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
            .context("reading the task definition from stdin")?
    } else {
        std::fs::read_to_string(&args.taskdef).map_err(|e| {
            UsageError(format!(
                "cannot read task definition {}: {e}",
                args.taskdef.display()
            ))
        })?
    };
    // Go's syntax, as every duration pullauth reads.
    let wait_timeout = args
        .wait_timeout
        .parse::<pullauth_config::GoDuration>()
        .ok()
        .and_then(|d| u64::try_from(d.0).ok())
        .map(std::time::Duration::from_nanos)
        .ok_or_else(|| {
            UsageError(format!(
                "--wait-timeout {:?} is not a duration such as 90s, 10m or 1.5h",
                args.wait_timeout
            ))
        })?;
    // Only ECS_DATADIR matters here, so the rest of the configuration is not
    // validated: a task can be submitted while a reload is being fixed.
    let sources = Sources::with_env_file(super::read_env_file(&args.config)?)?;
    let socket = control_socket_path(args.control_socket.as_ref(), sources.data_dir().as_ref());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let (status, task) = request(&socket, Method::POST, "/v1/tasks", body).await?;
        if status == StatusCode::BAD_REQUEST {
            let message = task["error"].as_str().unwrap_or("invalid task definition");
            return Err(
                UsageError(format!("the agent refused the task definition: {message}")).into(),
            );
        }
        if status != StatusCode::CREATED {
            bail!(
                "the agent answered {status}: {}",
                task["error"].as_str().unwrap_or("no details")
            );
        }
        let arn = task["Arn"]
            .as_str()
            .context("the agent's answer has no task ARN")?
            .to_owned();
        if !args.wait {
            say(serde_json::to_string(&task)?)?;
            return Ok(ExitCode::SUCCESS);
        }
        let started = Instant::now();
        let path = format!(
            "/v1/tasks?taskarn={}",
            utf8_percent_encode(&arn, NON_ALPHANUMERIC)
        );
        loop {
            let (status, task) = request(&socket, Method::GET, &path, String::new()).await?;
            if status != StatusCode::OK {
                bail!("the agent answered {status} for task {arn}");
            }
            match task["KnownStatus"].as_str() {
                Some("PULLED") => {
                    say(serde_json::to_string(&task)?)?;
                    return Ok(ExitCode::SUCCESS);
                }
                Some("STOPPED") => {
                    say(serde_json::to_string(&task)?)?;
                    for container in task["Containers"].as_array().into_iter().flatten() {
                        if let Some(error) = container["PullError"].as_str() {
                            eprintln!(
                                "pullauth: container {}: {error}",
                                container["Name"].as_str().unwrap_or("?")
                            );
                        }
                    }
                    return Ok(ExitCode::from(exit::FAILED));
                }
                _ if started.elapsed() > wait_timeout => {
                    bail!(
                        "task {arn} did not finish within {}",
                        humantime::format_duration(wait_timeout)
                    );
                }
                _ => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    })
}

/// One HTTP/1.1 request over the Unix socket; returns status and JSON body.
async fn request(
    socket: &Path,
    method: Method,
    path: &str,
    body: String,
) -> anyhow::Result<(StatusCode, Value)> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "cannot connect to the agent's control socket {} (is `pullauth serve` running? \
             pass the --env-file it reads, or --control-socket)",
                socket.display()
            )
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("talking to the agent")?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "pullauth")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .context("building the request")?;
    let response = sender
        .send_request(request)
        .await
        .context("talking to the agent")?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .context("reading the agent's answer")?
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}
