//! HTTP: the read-only introspection router (TCP) and the control router
//! (Unix socket). Handlers give clients short messages and send details to
//! the log.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
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
                "TokenExpiresAt": humantime::format_rfc3339_seconds(token.expires_at).to_string(),
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
async fn healthz(State(agent): State<Agent>) -> Response {
    if agent.store().write_failing() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "degraded", "error": "state writes are failing; see the agent log" }),
        );
    }
    json_response(StatusCode::OK, json!({ "status": "ok" }))
}

async fn metrics(State(agent): State<Agent>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        agent.metrics().render_with_aws(
            agent
                .provider()
                .aws_if_built()
                .map(|aws| aws.counters())
                .as_ref(),
        ),
    )
        .into_response()
}

/// Reads the request body within [`BODY_READ_TIMEOUT`] and
/// [`MAX_TASK_DEFINITION_BYTES`] (set on the router).
async fn read_body(request: Request) -> Result<Bytes, Response> {
    match tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(request, &())).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the task definition is larger than {} KiB",
                MAX_TASK_DEFINITION_BYTES / 1024
            ),
        )),
        Ok(Err(rejection)) => {
            tracing::debug!(error = %rejection.body_text(), "reading a request body");
            Err(error(rejection.status(), "cannot read the request body"))
        }
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}",
                humantime::format_duration(BODY_READ_TIMEOUT)
            ),
        )),
    }
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
