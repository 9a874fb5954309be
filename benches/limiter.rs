//! Micro-benchmark of the limiter: permit decisions per second for one key.
//!
//! `cargo bench --bench limiter`. Three cases: a key whose limit never binds (every decision
//! grants), a key at its limit (every decision refuses with the earliest instant), and the
//! routing projection with a queue of waiting requests.

use std::hint::black_box;
use std::time::Duration;

use ai_rate_limiter::limiter::{Limiter, Limits};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::time::Instant;

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter");
    group.throughput(Throughput::Elements(1));

    group.bench_function("grant (limit not binding)", |b| {
        let mut lim = Limiter::new(Limits::new(1_000_000, Duration::from_secs(1), None));
        let mut now = Instant::now();
        b.iter(|| {
            now += Duration::from_micros(2);
            black_box(lim.try_acquire(black_box(now), 0).is_ok())
        });
    });

    group.bench_function("refuse (key at its limit)", |b| {
        let mut lim = Limiter::new(Limits::new(50, Duration::from_secs(1), None));
        let now = Instant::now();
        for _ in 0..50 {
            let _ = lim.try_acquire(now, 0);
        }
        b.iter(|| black_box(lim.try_acquire(black_box(now), 0).is_err()));
    });

    group.bench_function("grant with token window", |b| {
        let mut lim = Limiter::new(Limits::new(
            1_000_000,
            Duration::from_secs(1),
            Some(u64::MAX / 4),
        ));
        let mut now = Instant::now();
        b.iter(|| {
            now += Duration::from_micros(2);
            if let Ok(g) = lim.try_acquire(black_box(now), 300) {
                lim.reconcile(g, 120);
            }
        });
    });

    group.bench_function("projected slot, 100 queued", |b| {
        let mut lim = Limiter::new(Limits::new(50, Duration::from_secs(1), None));
        let now = Instant::now();
        for _ in 0..50 {
            let _ = lim.try_acquire(now, 0);
        }
        b.iter(|| black_box(lim.projected(black_box(now), 100, 0)));
    });
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
