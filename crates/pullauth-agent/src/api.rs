//! HTTP: the read-only introspection router (TCP) and the control router
//! (Unix socket). Handlers give clients short messages and send details to
//! the log.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::agent::{Agent, SubmitError, VerifyError, VerifyTarget};

/// The paths the introspection server answers, as listed on `/`.
pub const AVAILABLE_COMMANDS: &[&str] = &[
    "/v1/metadata",
    "/v1/tasks",
    "/v1/registries",
    "/v1/prefetch",
    "/healthz",
    "/metrics",
];

/// Largest task definition the control API reads. ECS itself refuses task
/// definitions over 64 KiB; 1 MiB leaves room for generous environment
/// blocks while one request cannot make the agent hold much memory. Larger
/// bodies get 413.
pub const MAX_TASK_DEFINITION_BYTES: usize = 1024 * 1024;

/// How long a client may take to send a task definition once its headers
/// have arrived. Over a local socket 1 MiB takes milliseconds; a client that
/// trickles its body is dropped with 408 instead of holding a connection.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Read-only routes, shaped like the ECS agent's introspection API.
pub fn introspection(agent: Agent) -> Router {
    Router::new()
        .route("/", get(available_commands))
        .route("/v1/metadata", get(metadata))
        .route("/v1/tasks", get(tasks))
        .route("/v1/registries", get(registries))
        .route("/v1/prefetch", get(prefetch))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(available_commands)
        .with_state(agent)
}

/// Routes for whoever holds the control socket: submit and read tasks.
pub fn control(agent: Agent) -> Router {
    Router::new()
        .route("/v1/tasks", get(tasks).post(submit))
        .route("/v1/verify", post(verify))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_TASK_DEFINITION_BYTES))
        .with_state(agent)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, json!({ "error": message.into() }))
}

async fn available_commands() -> Response {
    json_response(
        StatusCode::OK,
        json!({ "AvailableCommands": AVAILABLE_COMMANDS }),
    )
}

async fn metadata(State(agent): State<Agent>) -> Response {
    let identity = agent.identity();
    json_response(
        StatusCode::OK,
        json!({
            "Cluster": identity.cluster,
            "ContainerInstanceArn": identity.container_instance_arn,
            "Version": format!("pullauth v{}", identity.version),
        }),
    )
}

async fn tasks(
    State(agent): State<Agent>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(arn) = query.get("taskarn") {
        return match agent.store().task(arn) {
            Ok(Some(task)) => json_response(StatusCode::OK, json!(task)),
            Ok(None) => error(StatusCode::NOT_FOUND, "no task with that ARN"),
            Err(e) => {
                tracing::error!(error = %e, "reading a task");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot read state; see the agent log",
                )
            }
        };
    }
    // The records as the store keeps them in memory: no encoding per request.
    let body = format!("{{\"Tasks\":{}}}", agent.store().tasks_json());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn registries(State(agent): State<Agent>) -> Response {
    let settings = agent.settings();
    let list: Vec<Value> = settings
        .table
        .entries()
        .iter()
        .map(|entry| {
            json!({
                "Key": entry.key.written,
                "AppliesTo": entry.key.to_string(),
                "Username": entry.credentials.username,
                "AuthenticatesWith": entry.credentials.kind(),
            })
        })
        .collect();
    // ECR registries with a token in the cache: until when, never the token.
    let ecr: Vec<Value> = agent
        .provider()
        .aws_if_built()
        .map(|aws| aws.ecr_tokens_in_use())
        .unwrap_or_default()
        .into_iter()
        .map(|token| {
            json!({
                "Registry": token.registry.host,
                "Source": pullauth_resolve::ecr_label(&token.registry),
                "Principal": token.principal.to_string(),
                "Endpoint": token.endpoint,
                "TokenExpiresAt": pullauth_store::rfc3339_seconds(token.expires_at),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({ "Registries": list, "EcrRegistries": ecr }),
    )
}

/// 200 while the agent can record state; 503 while state writes fail
/// (e.g. the disk behind `ECS_DATADIR` is full), so that supervisors notice.
/// What the cluster follower follows: service -> task definition -> images
/// with their source and state, the last poll and its error. No secret.
async fn prefetch(State(agent): State<Agent>) -> Response {
    let view = agent.following(|view| view.to_json(&agent));
    json_response(StatusCode::OK, view)
}

async fn healthz(State(agent): State<Agent>) -> Response {
    if agent.store().write_failing() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "degraded", "error": "state writes are failing; see the agent log" }),
        );
    }
    json_response(StatusCode::OK, json!({ "status": "ok" }))
}

/// OpenMetrics for clients that ask for it (Prometheus does), else the
/// classic text format, as Prometheus's own client libraries decide.
async fn metrics(State(agent): State<Agent>, headers: header::HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    let aws = agent.provider().aws_if_built().map(|aws| aws.counters());
    let (content_type, body) = if openmetrics {
        (
            crate::metrics::OPENMETRICS_CONTENT_TYPE,
            agent.metrics().render_with_aws(aws.as_ref()),
        )
    } else {
        (
            crate::metrics::CLASSIC_CONTENT_TYPE,
            agent.metrics().render_classic_with_aws(aws.as_ref()),
        )
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// How much of a too-large body is still read (and thrown away) before
/// the 413 answer, so that a client that writes its whole body before
/// reading (Python's `http.client`, curl with small bodies) gets the answer
/// instead of a connection reset: closing a socket with unread data sends
/// RST, which discards the answer on the client's side.
pub const DRAIN_LIMIT: usize = 4 * 1024 * 1024;
/// The most time spent draining such a body.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads the request body within [`BODY_READ_TIMEOUT`] and
/// [`MAX_TASK_DEFINITION_BYTES`]; a larger body is drained within
/// [`DRAIN_LIMIT`] and [`DRAIN_TIMEOUT`], then refused with 413.
async fn read_body(request: Request) -> Result<Bytes, Response> {
    use futures_util::StreamExt as _;
    let mut body = request.into_body().into_data_stream();
    let mut buffer = Vec::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                tracing::debug!(error = %e, "reading a request body");
                error(StatusCode::BAD_REQUEST, "cannot read the request body")
            })?;
            if buffer.len() + chunk.len() > MAX_TASK_DEFINITION_BYTES {
                return Ok(Some(buffer.len() + chunk.len()));
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(None)
    };
    let too_large = match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(None)) => return Ok(Bytes::from(buffer)),
        Ok(Ok(Some(seen))) => seen,
        Ok(Err(response)) => return Err(response),
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {}",
                    humantime::format_duration(BODY_READ_TIMEOUT)
                ),
            ));
        }
    };
    drop(buffer);
    let drain = async {
        let mut seen = too_large;
        while seen < DRAIN_LIMIT {
            match body.next().await {
                Some(Ok(chunk)) => seen += chunk.len(),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    Err(error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the task definition is larger than {} KiB",
            MAX_TASK_DEFINITION_BYTES / 1024
        ),
    ))
}

async fn submit(State(agent): State<Agent>, request: Request) -> Response {
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    // Run the submission as its own task: a client that hangs up must not
    // cancel it halfway (task written, pulls not started).
    let submitted = tokio::spawn(async move { agent.submit(&body).await }).await;
    let Ok(result) = submitted else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the submission did not complete; see the agent log",
        );
    };
    match result {
        Ok(task) => json_response(StatusCode::CREATED, json!(task)),
        Err(SubmitError::Invalid(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(SubmitError::Store(e)) => {
            tracing::error!(error = %e, "recording a task");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot record the task; see the agent log",
            )
        }
    }
}

/// The body `POST /v1/verify` accepts: `{"images": [...]}`, or
/// `{"task": "<ARN>"}` for one known task's containers with their own
/// credentials; an empty body verifies every container of the known tasks.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    #[serde(default)]
    images: Option<Vec<String>>,
    #[serde(default)]
    task: Option<String>,
}

/// What `POST /v1/verify` accepts, for error messages.
const VERIFY_BODY: &str =
    "the body must be {\"images\": [\"IMAGE\", ...]}, {\"task\": \"ARN\"} or empty";

/// Asks each image's registry, through the engine, whether the credentials
/// a pull would use may read it, without pulling; answers one object per
/// image, as `pullauth verify --json` prints them.
async fn verify(State(agent): State<Agent>, request: Request) -> Response {
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let images = if body.iter().all(u8::is_ascii_whitespace) {
        VerifyTarget::KnownTasks
    } else {
        match serde_json::from_slice::<VerifyRequest>(&body) {
            Ok(VerifyRequest {
                images: Some(images),
                task: None,
            }) => VerifyTarget::Images(images),
            Ok(VerifyRequest {
                images: None,
                task: Some(task),
            }) => VerifyTarget::Task(task),
            Ok(_) => return error(StatusCode::BAD_REQUEST, VERIFY_BODY),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("{VERIFY_BODY}: {e}")),
        }
    };
    match agent.verify(images).await {
        Ok(reports) => json_response(
            StatusCode::OK,
            Value::Array(reports.iter().map(|r| r.to_json()).collect()),
        ),
        Err(VerifyError::Invalid(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ VerifyError::UnknownTask { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(VerifyError::Store(e)) => {
            tracing::error!(error = %e, "reading tasks to verify");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read state; see the agent log",
            )
        }
    }
}
