//! The publishing rules against an in-memory object with S3's conditional
//! semantics (ETags, `If-Match`, `If-None-Match`); moto's S3 runs the same
//! paths in the integration suite.

use std::sync::Mutex;

use futures_util::FutureExt;
use pullauth_ecs::{EcsService, ServiceStatus};

use super::*;

/// A write another publisher makes at a chosen moment.
type Race = Box<dyn FnOnce(&Object) + Send>;

/// One object with S3's conditional semantics. `before_put` runs before a
/// write is checked: a test writes there to lose a race on purpose.
#[derive(Default)]
struct Object {
    current: Mutex<Option<(String, Vec<u8>)>>,
    versions: Mutex<u32>,
    gets: Mutex<u32>,
    puts: Mutex<u32>,
    before_put: Mutex<Option<Race>>,
}

impl Object {
    fn write(&self, body: Vec<u8>) -> String {
        let mut versions = self.versions.lock().expect("versions");
        *versions += 1;
        let etag = format!("\"v{versions}\"");
        *self.current.lock().expect("current") = Some((etag.clone(), body));
        etag
    }

    fn document(&self) -> PlanDocument {
        let current = self.current.lock().expect("current");
        let body = &current.as_ref().expect("an object").1;
        serde_json::from_slice(body).expect("a document")
    }
}

impl PlanStore for Object {
    fn get<'a>(
        &'a self,
        _location: &'a S3Location,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, AwsError>> {
        *self.gets.lock().expect("gets") += 1;
        let current = self.current.lock().expect("current").clone();
        let answer = Fetched::from_current(
            current
                .as_ref()
                .map(|(etag, body)| (etag.as_str(), body.as_slice())),
            etag,
        );
        async move { Ok(answer) }.boxed()
    }

    fn put<'a>(
        &'a self,
        _location: &'a S3Location,
        body: Vec<u8>,
        condition: Condition,
    ) -> BoxFuture<'a, Result<Stored, AwsError>> {
        *self.puts.lock().expect("puts") += 1;
        if let Some(race) = self.before_put.lock().expect("race").take() {
            race(self);
        }
        let current = self
            .current
            .lock()
            .expect("current")
            .as_ref()
            .map(|(etag, _)| etag.clone());
        let allowed = condition.holds(current.as_deref());
        let answer = if allowed {
            Stored::Written {
                etag: self.write(body),
            }
        } else {
            Stored::Conflict
        };
        async move { Ok(answer) }.boxed()
    }
}

fn location() -> S3Location {
    S3Location::parse("s3://plans/prod.json").expect("valid")
}

fn view(revision: u32) -> ClusterView {
    ClusterView {
        cluster: "prod".into(),
        services_read: true,
        services: vec![EcsService {
            name: "web".into(),
            status: ServiceStatus::Active,
            deployment_controller: "ECS".into(),
            placement_constraints: vec![],
            runs: vec![pullauth_ecs::Run {
                task_definition: format!("web:{revision}"),
                capacity: Default::default(),
                id: None,
                origin: "service".into(),
            }],
        }],
        ..ClusterView::default()
    }
}

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
}

#[tokio::test]
async fn writes_a_new_plan_once_and_confirms_it_only_when_due() {
    let s3 = Object::default();
    let first = publish(&s3, &location(), &view(1), at(0), "i-a", at(1))
        .await
        .expect("published");
    assert_eq!(
        first,
        Published::Written {
            etag: "\"v1\"".into()
        }
    );
    assert_eq!(s3.document().view, view(1));
    assert_eq!(s3.document().publisher, "i-a");

    // The same view a minute later: nothing written.
    let again = publish(&s3, &location(), &view(1), at(60), "i-a", at(61))
        .await
        .expect("published");
    assert_eq!(again, Published::Unchanged);
    assert_eq!(*s3.puts.lock().expect("puts"), 1);

    // The same view once CONFIRM_EVERY has passed: confirmed.
    let later = at(1 + CONFIRM_EVERY.as_secs());
    let confirmed = publish(&s3, &location(), &view(1), later, "i-b", later)
        .await
        .expect("published");
    assert_eq!(
        confirmed,
        Published::Confirmed {
            etag: "\"v2\"".into()
        }
    );
    assert_eq!(s3.document().checked_at, rfc3339_millis(later));

    // A new view: written.
    let changed = publish(&s3, &location(), &view(2), later, "i-a", later)
        .await
        .expect("published");
    assert_eq!(
        changed,
        Published::Written {
            etag: "\"v3\"".into()
        }
    );
    assert_eq!(s3.document().view, view(2));
}

#[tokio::test]
async fn a_publisher_with_an_older_view_never_replaces_a_newer_plan() {
    let s3 = Object::default();
    // B read ECS at t=100 and published the new revision.
    publish(&s3, &location(), &view(2), at(100), "i-b", at(101))
        .await
        .expect("published");
    // A started its read at t=90 (before B's) and saw the old revision.
    let older = publish(&s3, &location(), &view(1), at(90), "i-a", at(102))
        .await
        .expect("no error");
    assert!(
        matches!(older, Published::Newer { ref publisher, .. } if publisher == "i-b"),
        "{older:?}"
    );
    assert_eq!(s3.document().view, view(2));
    assert_eq!(*s3.puts.lock().expect("puts"), 1);
}

#[tokio::test]
async fn a_write_that_loses_a_race_reads_again_and_yields_to_the_newer_plan() {
    let s3 = Object::default();
    publish(&s3, &location(), &view(1), at(0), "i-a", at(1))
        .await
        .expect("published");
    // Between A's read of the object and A's write, B writes a plan read
    // after A's: A's conditional write fails, A reads again and yields.
    *s3.before_put.lock().expect("race") = Some(Box::new(|s3: &Object| {
        let newer = PlanDocument {
            schema: PLAN_SCHEMA.into(),
            cluster: "prod".into(),
            read_at: rfc3339_millis(at(300)),
            checked_at: rfc3339_millis(at(301)),
            publisher: "i-b".into(),
            view: view(3),
        };
        s3.write(newer.to_json());
    }));
    let lost = publish(&s3, &location(), &view(2), at(200), "i-a", at(201))
        .await
        .expect("no error");
    assert!(matches!(lost, Published::Newer { .. }), "{lost:?}");
    assert_eq!(s3.document().view, view(3));
}

#[tokio::test]
async fn another_clusters_plan_and_a_newer_schema_are_never_overwritten() {
    let s3 = Object::default();
    let mut staging = view(1);
    staging.cluster = "staging".into();
    publish(&s3, &location(), &staging, at(0), "i-s", at(1))
        .await
        .expect("published");
    let error = publish(&s3, &location(), &view(1), at(10), "i-a", at(11))
        .await
        .expect_err("foreign");
    let message = error.to_string();
    assert!(
        message.contains("s3://plans/prod.json") && message.contains("\"staging\""),
        "{message}"
    );

    let s3 = Object::default();
    s3.write(br#"{"schema":"pullauth.cluster-plan/v9","cluster":"prod"}"#.to_vec());
    let error = publish(&s3, &location(), &view(1), at(10), "i-a", at(11))
        .await
        .expect_err("newer schema");
    assert!(error.to_string().contains("v9"), "{error}");
    assert_eq!(*s3.puts.lock().expect("puts"), 0);

    // Garbage is replaced.
    let s3 = Object::default();
    s3.write(b"{\"schema\":\"pullauth.cluster-plan/v1\",\"clu".to_vec());
    let replaced = publish(&s3, &location(), &view(1), at(10), "i-a", at(11))
        .await
        .expect("replaced");
    assert!(
        matches!(replaced, Published::Written { .. }),
        "{replaced:?}"
    );
}

#[tokio::test]
async fn a_follower_rereads_only_a_changed_plan_and_keeps_the_last_good_one() {
    let s3 = Object::default();
    let reader = PlanReader::default();
    let missing = reader
        .read(&s3, &location(), "prod")
        .await
        .expect_err("no plan yet");
    assert!(
        missing
            .to_string()
            .contains("no plan at s3://plans/prod.json"),
        "{missing}"
    );

    publish(&s3, &location(), &view(1), at(0), "i-a", at(1))
        .await
        .expect("published");
    let first = reader.read(&s3, &location(), "prod").await.expect("read");
    assert!(first.changed);
    assert_eq!(first.document.view, view(1));
    let second = reader.read(&s3, &location(), "prod").await.expect("read");
    assert!(!second.changed, "a 304 keeps the held plan");

    // A truncated plan: an error naming the object; the held one stays.
    s3.write(b"{\"schema\":\"pullauth.cluster-plan/v1\"".to_vec());
    let error = reader
        .read(&s3, &location(), "prod")
        .await
        .expect_err("truncated");
    let message = error.to_string();
    assert!(
        message.contains("s3://plans/prod.json") && message.contains("last good plan is kept"),
        "{message}"
    );
    assert_eq!(error.class(), pullauth_aws::ErrorClass::BadResponse);
    // Another cluster's plan: refused too.
    let mut staging = view(1);
    staging.cluster = "staging".into();
    s3.write(
        PlanDocument {
            schema: PLAN_SCHEMA.into(),
            cluster: "staging".into(),
            read_at: rfc3339_millis(at(5)),
            checked_at: rfc3339_millis(at(5)),
            publisher: "i-s".into(),
            view: staging,
        }
        .to_json(),
    );
    let error = reader
        .read(&s3, &location(), "prod")
        .await
        .expect_err("foreign");
    assert!(error.to_string().contains("\"staging\""), "{error}");
    assert_eq!(reader.held().expect("held").1.view, view(1));
}

#[test]
fn ages_count_from_the_last_confirmation() {
    let document = PlanDocument {
        schema: PLAN_SCHEMA.into(),
        cluster: "prod".into(),
        read_at: rfc3339_millis(at(0)),
        checked_at: rfc3339_millis(at(60)),
        publisher: "i-a".into(),
        view: view(1),
    };
    assert_eq!(age(&document, at(960)), Some(Duration::from_secs(900)));
    assert_eq!(age(&document, at(0)), Some(Duration::ZERO));
}
