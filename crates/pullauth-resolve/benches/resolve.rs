//! Resolve throughput by number of configured keys.
//!
//! `pullauth` indexes keys by host, so a lookup costs the same with 10 keys
//! as with 100,000. For comparison, `linear_scan` reproduces the ECS agent's
//! published algorithm (every key is visited for every lookup).
//!
//! Run: `cargo bench -p pullauth-resolve --bench resolve`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pullauth_config::AuthType;
use pullauth_resolve::{ImageRef, RegistryTable};
use secrecy::SecretString;

const SIZES: [usize; 3] = [10, 1_000, 100_000];

/// `n` keys over n/2 hosts, half of them with a namespace.
fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                format!("registry{}.example.com", i / 2)
            } else {
                format!("https://registry{}.example.com/team{i}", i / 2)
            }
        })
        .collect()
}

fn table(keys: &[String]) -> RegistryTable {
    let body: Vec<String> = keys
        .iter()
        .map(|k| format!(r#""{k}":{{"username":"u","password":"p"}}"#))
        .collect();
    let data = SecretString::from(format!("{{{}}}", body.join(",")));
    RegistryTable::from_auth_data(AuthType::Docker, &data).expect("valid")
}

/// Images spread over the configured hosts, with and without namespaces,
/// plus one that matches nothing.
fn images(n: usize) -> Vec<ImageRef> {
    let hosts = (n / 2).max(1);
    [0, hosts / 3, hosts / 2, hosts - 1]
        .iter()
        .flat_map(|h| {
            [
                format!("registry{h}.example.com/app:1"),
                format!("registry{h}.example.com/team{}/app:1", 2 * h + 1),
            ]
        })
        .chain(["unconfigured.example.org/app".to_owned()])
        .map(|i| ImageRef::parse(&i).expect("valid"))
        .collect()
}

/// The ECS agent's lookup: exact host, then every key whose host matches,
/// longest by string length with a string-prefix test.
fn linear_scan<'a>(keys: &'a [String], image: &ImageRef) -> Option<&'a str> {
    let host = image.registry.as_str();
    let full = format!("{}/{}", image.registry, image.repository);
    let mut longest: Option<&str> = None;
    for key in keys {
        let stripped = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
            .unwrap_or(key);
        let key_host = stripped.split('/').next().unwrap_or(stripped);
        if key_host == host {
            match longest {
                None => longest = Some(stripped),
                Some(l) if stripped.len() > l.len() && full.starts_with(stripped) => {
                    longest = Some(stripped)
                }
                _ => {}
            }
        }
    }
    longest
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolve");
    for n in SIZES {
        let keys = keys(n);
        let table = table(&keys);
        let images = images(n);
        group.throughput(Throughput::Elements(images.len() as u64));
        group.bench_with_input(BenchmarkId::new("pullauth", n), &images, |b, images| {
            b.iter(|| {
                for image in images {
                    black_box(table.lookup(black_box(image)));
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("linear_scan", n), &images, |b, images| {
            b.iter(|| {
                for image in images {
                    black_box(linear_scan(&keys, black_box(image)));
                }
            })
        });
    }
    group.finish();

    let mut parse = c.benchmark_group("parse_and_resolve");
    let table = table(&keys(1_000));
    parse.bench_function("resolve_str", |b| {
        b.iter(|| {
            black_box(
                table
                    .resolve(black_box("registry7.example.com/team15/app:1"))
                    .ok(),
            )
        })
    });
    parse.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
