//! What durable auditing costs: small aggregate queries over loopback HTTP from 1, 8 and 64
//! concurrent clients, with every audit record synced to disk before its answer (as served)
//! and with syncing off (records still written and chained). Group commit should keep the
//! synced throughput within 0.8× of the unsynced.
//!
//! Run with `cargo bench -p veil-tests --bench audit`; criterion prints the time per batch of
//! queries for `fsync` and `no_fsync` in each group; their ratio is the throughput ratio.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use veil_tests::TestServer;
use veil_tests::world::{World, world_on};

const SQL: &str = "SELECT district, count(*) AS n, avg(subsidy) FROM civil.residents GROUP BY district";
/// Queries per measured batch, spread over the clients.
const BATCH: usize = 256;

async fn batch(w: &World, clients: usize) {
    let per_client = BATCH / clients;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let url = format!("{}/v1/query", w.s.url);
            let token = w.civil_analyst.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for _ in 0..per_client {
                    let response =
                        client.post(&url).bearer_auth(&token).json(&json!({"sql": SQL})).send().await.unwrap();
                    assert!(response.status().is_success());
                    response.bytes().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let worlds: Vec<(&str, World)> = [("fsync", true), ("no_fsync", false)]
        .into_iter()
        .map(|(name, sync)| {
            let options = veil_audit::Options { sync, ..veil_audit::Options::default() };
            (name, runtime.block_on(async { world_on(TestServer::start_configured(usize::MAX, options).await).await }))
        })
        .collect();
    for clients in [1, 8, 64] {
        let mut group = c.benchmark_group(format!("small_queries_{clients}_clients"));
        group.throughput(Throughput::Elements(BATCH as u64)).sample_size(10).measurement_time(Duration::from_secs(20));
        for (name, world) in &worlds {
            group.bench_with_input(BenchmarkId::new(*name, clients), &clients, |b, &clients| {
                b.to_async(&runtime).iter_custom(|iterations| async move {
                    let started = Instant::now();
                    for _ in 0..iterations {
                        batch(world, clients).await;
                    }
                    started.elapsed()
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, throughput);
criterion_main!(benches);
