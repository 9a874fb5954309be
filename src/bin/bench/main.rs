//! `bench`: the end-to-end benchmark of ai-rate-limiter.
//!
//! Starts a stand-in provider on 127.0.0.1 (configurable latency), starts the engine in this
//! process on the chosen backends (embedded SQLite + in-process queue by default;
//! `--database-url` / `--rabbitmq-url` for PostgreSQL + RabbitMQ) serving its HTTP API on
//! 127.0.0.1, measures the baseline (the stand-in called directly with the same concurrency),
//! then registers a workspace with K keys, publishes M messages through the HTTP API (single and
//! batch modes), waits until all are done and prints a table (or `--json`).
//!
//! `--workspaces W` instead registers W workspaces and measures memory and restart-to-ready.
//! See BENCHMARKS.md for the commands and the figures measured.

mod stand_in;
mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ai_rate_limiter::{Engine, EngineConfig};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use stand_in::StandIn;
use stats::{peak_rss_mib, percentile_ms, rss_mib, windows_over_limit};

/// mimalloc: glibc's malloc was ~10% of the embedded benchmark's CPU (many small, short-lived
/// allocations across threads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Single,
    Batch,
    Both,
}

/// End-to-end benchmark of ai-rate-limiter.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench")]
struct Args {
    /// Messages to publish per mode.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Provider keys in the workspace.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Workers (consumers) of the workspace; also the baseline's concurrency.
    #[arg(long, default_value_t = 64)]
    workers: u32,
    /// Stand-in provider latency, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Requests per period per key. Unset: limits do not bind (1,000,000 per second).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Rate-limit period in seconds.
    #[arg(long, default_value_t = 1)]
    period: u64,
    /// Publish mode.
    #[arg(long, value_enum, default_value = "both")]
    mode: Mode,
    /// Concurrent publishers (single mode).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Messages per batch request (batch mode, at most 1000).
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Database URL (default: a fresh SQLite file in the temp directory).
    #[arg(long)]
    database_url: Option<String>,
    /// RabbitMQ URL (default: the in-process queue).
    #[arg(long)]
    rabbitmq_url: Option<String>,
    /// The engine's transport guard on every key's period, in milliseconds (LIMIT_GUARD_MS).
    #[arg(long, default_value_t = 5)]
    limit_guard_ms: u64,
    /// Register this many workspaces and measure memory and restart-to-ready instead.
    #[arg(long)]
    workspaces: Option<usize>,
    /// Skip the direct baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Serialize)]
struct RunReport {
    mode: String,
    messages: usize,
    seconds: f64,
    messages_per_s: f64,
    baseline_per_s: Option<f64>,
    ratio_to_baseline: Option<f64>,
    publish_p50_ms: f64,
    publish_p99_ms: f64,
    dispatch_p50_ms: f64,
    dispatch_p99_ms: f64,
    combined_limit_per_s: Option<f64>,
    utilisation: Option<f64>,
    windows_over_limit: usize,
}

#[derive(Debug, Default, Serialize)]
struct WorkspacesReport {
    workspaces: usize,
    register_seconds: f64,
    rss_after_register_mib: f64,
    restart_to_ready_seconds: f64,
    rss_after_restart_mib: f64,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    machine_cores: usize,
    database: String,
    queue: String,
    keys: usize,
    workers: u32,
    latency_ms: u64,
    rate_limit: Option<u32>,
    period_s: u64,
    baseline_per_s: Option<f64>,
    runs: Vec<RunReport>,
    workspaces: Option<WorkspacesReport>,
    peak_rss_mib: f64,
}

struct App {
    base: String,
    http: reqwest::Client,
    engine: Engine,
    server: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_app(config: EngineConfig) -> anyhow::Result<App> {
    let engine = Engine::start(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let e = engine.clone();
    let server = tokio::spawn(async move {
        let _ = ai_rate_limiter::server::run(listener, e, async {
            let _ = rx.await;
        })
        .await;
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    Ok(App {
        base: format!("http://{addr}"),
        http,
        engine,
        server,
        stop,
    })
}

impl App {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.engine.shutdown(Duration::from_secs(5)).await;
    }
}

fn engine_config(args: &Args, db_url: &str) -> EngineConfig {
    let mut c = EngineConfig::new(db_url);
    c.rabbitmq_url = args.rabbitmq_url.clone();
    c.queue_prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    c.max_workers = args.workers.max(256);
    c.limit_guard = Duration::from_millis(args.limit_guard_ms);
    c
}

/// The stand-in called directly with `concurrency` requests in flight.
async fn baseline(stand_in: &StandIn, messages: usize, concurrency: usize) -> anyhow::Result<f64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(1))
        .build()?;
    let url = format!("{}/chat/completions", stand_in.endpoint);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let http = http.clone();
        let url = url.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < messages {
                let _ = http
                    .post(&url)
                    .bearer_auth("baseline")
                    .json(&json!({"model": "bench-model", "messages": [{"role": "user", "content": "baseline"}]}))
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    stand_in.take_arrivals();
    Ok(messages as f64 / secs)
}

async fn run_mode(
    args: &Args,
    app: &App,
    stand_in: &StandIn,
    mode: Mode,
    baseline: Option<f64>,
) -> anyhow::Result<RunReport> {
    let tag = format!("{mode:?}").to_lowercase();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let ws = format!("bench-{tag}-{suffix}");
    let limit = args.rate_limit.unwrap_or(1_000_000);
    let key_names: Vec<String> = (0..args.keys)
        .map(|i| format!("bench-{tag}-{suffix}-key{i}"))
        .collect();
    let providers: Vec<Value> = key_names
        .iter()
        .map(|k| {
            json!({"name": "openai", "api_key": k, "rate_limit": limit, "rate_limit_period": args.period,
                   "config": {"model": "bench-model", "endpoint": stand_in.endpoint, "timeout_s": 60}})
        })
        .collect();
    let (s, b) = app
        .post(
            "/workspace/register",
            json!({"workspace_id": ws, "providers": providers}),
        )
        .await?;
    anyhow::ensure!(s == 201, "register failed: {b}");
    let (s, b) = app
        .post(
            &format!("/workers/scale/{ws}"),
            json!({"count": args.workers}),
        )
        .await?;
    anyhow::ensure!(s == 200, "scale failed: {b}");

    let m = args.messages;
    let mut done = app.engine.subscribe_completions();
    let published_at: Arc<Vec<std::sync::Mutex<Option<Instant>>>> =
        Arc::new((0..m).map(|_| std::sync::Mutex::new(None)).collect());
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(m)));
    let start = Instant::now();
    let publisher = {
        let http = app.http.clone();
        let base = app.base.clone();
        let ws = ws.clone();
        let published_at = published_at.clone();
        let latencies = latencies.clone();
        let concurrency = args.concurrency.max(1);
        let batch = args.batch_size.clamp(1, 1000);
        tokio::spawn(async move {
            let sem = Arc::new(Semaphore::new(concurrency));
            let mut tasks = Vec::new();
            let chunks: Vec<(usize, usize)> = match mode {
                Mode::Batch => (0..m)
                    .step_by(batch)
                    .map(|i| (i, (i + batch).min(m)))
                    .collect(),
                _ => (0..m).map(|i| (i, i + 1)).collect(),
            };
            for (lo, hi) in chunks {
                let permit = sem.clone().acquire_owned().await;
                let http = http.clone();
                let base = base.clone();
                let ws = ws.clone();
                let published_at = published_at.clone();
                let latencies = latencies.clone();
                tasks.push(tokio::spawn(async move {
                    let _permit = permit;
                    let t0 = Instant::now();
                    let ok = if mode == Mode::Batch {
                        let messages: Vec<Value> = (lo..hi)
                            .map(|i| json!({"prompt": format!("bench #{i}")}))
                            .collect();
                        http.post(format!("{base}/message/publish/batch"))
                            .json(&json!({"workspace_id": ws, "messages": messages}))
                            .send()
                            .await
                            .map(|r| r.status().as_u16() == 201)
                            .unwrap_or(false)
                    } else {
                        http.post(format!("{base}/message/publish"))
                            .json(&json!({"workspace_id": ws, "prompt": format!("bench #{lo}")}))
                            .send()
                            .await
                            .map(|r| r.status().as_u16() == 201)
                            .unwrap_or(false)
                    };
                    let t1 = Instant::now();
                    if ok {
                        for i in lo..hi {
                            if let Ok(mut p) = published_at[i].lock() {
                                *p = Some(t1);
                            }
                        }
                        if let Ok(mut l) = latencies.lock() {
                            l.push(t1 - t0);
                        }
                    }
                    ok
                }));
            }
            let mut failed = 0usize;
            for t in tasks {
                if !t.await.unwrap_or(false) {
                    failed += 1;
                }
            }
            failed
        })
    };

    let mut finished = 0usize;
    let deadline = start + Duration::from_secs(600);
    let mut last_progress = Instant::now();
    while finished < m {
        match tokio::time::timeout_at(deadline, done.recv()).await {
            Err(_) => anyhow::bail!("timed out with {finished}/{m} messages done"),
            Ok(Ok(_)) => finished += 1,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => finished += n as usize,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                anyhow::bail!("engine stopped")
            }
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            eprintln!("  {tag}: {finished}/{m} done");
            last_progress = Instant::now();
        }
    }
    let elapsed = start.elapsed();
    let publish_failures = publisher.await?;
    anyhow::ensure!(
        publish_failures == 0,
        "{publish_failures} publish requests failed"
    );

    // The stand-in's own log: per key, sorted arrival instants.
    let arrivals: Vec<_> = stand_in
        .take_arrivals()
        .into_iter()
        .filter(|a| key_names.contains(&a.key))
        .collect();
    let mut per_key: HashMap<&str, Vec<&stand_in::Arrival>> = HashMap::new();
    for a in &arrivals {
        per_key.entry(a.key.as_str()).or_default().push(a);
    }
    let period = Duration::from_secs(args.period);
    let mut over = 0;
    let mut dispatch = Vec::with_capacity(arrivals.len());
    for list in per_key.values_mut() {
        list.sort_by_key(|a| a.at);
        let instants: Vec<Instant> = list.iter().map(|a| a.at).collect();
        if args.rate_limit.is_some() {
            over += windows_over_limit(&instants, limit as usize, period);
        }
        for (j, a) in list.iter().enumerate() {
            let Some(idx) = a.index else { continue };
            let Some(published) = published_at
                .get(idx)
                .and_then(|p| p.lock().ok().and_then(|p| *p))
            else {
                continue;
            };
            let mut earliest = published;
            if args.rate_limit.is_some() && j >= limit as usize {
                earliest = earliest.max(instants[j - limit as usize] + period);
            }
            dispatch.push(a.at.saturating_duration_since(earliest));
        }
    }
    let (combined, utilisation) = match args.rate_limit {
        Some(l) => {
            let per_period = (l as usize * args.keys) as f64;
            let combined = per_period / args.period as f64;
            let first = arrivals.iter().map(|a| a.at).min();
            let last = arrivals.iter().map(|a| a.at).max();
            let util = match (first, last) {
                (Some(f), Some(l)) if l > f => {
                    let batches = (arrivals.len() as f64 / per_period).ceil() - 1.0;
                    let ideal = batches * args.period as f64;
                    Some((ideal / (l - f).as_secs_f64()).min(1.0))
                }
                _ => None,
            };
            (Some(combined), util)
        }
        None => (None, None),
    };
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    let rate = m as f64 / elapsed.as_secs_f64();
    Ok(RunReport {
        mode: tag,
        messages: m,
        seconds: elapsed.as_secs_f64(),
        messages_per_s: rate,
        baseline_per_s: baseline,
        ratio_to_baseline: baseline.map(|b| rate / b),
        publish_p50_ms: percentile_ms(&mut lat, 50.0),
        publish_p99_ms: percentile_ms(&mut lat, 99.0),
        dispatch_p50_ms: percentile_ms(&mut dispatch, 50.0),
        dispatch_p99_ms: percentile_ms(&mut dispatch, 99.0),
        combined_limit_per_s: combined,
        utilisation,
        windows_over_limit: over,
    })
}

async fn run_workspaces(
    args: &Args,
    db_url: &str,
    count: usize,
) -> anyhow::Result<WorkspacesReport> {
    let app = start_app(engine_config(args, db_url)).await?;
    let start = Instant::now();
    let sem = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..count {
        let permit = sem.clone().acquire_owned().await?;
        let http = app.http.clone();
        let base = app.base.clone();
        tasks.push(tokio::spawn(async move {
            let _p = permit;
            let body = json!({"workspace_id": format!("ws-{i}"), "providers": [{
                "name": "mock", "api_key": format!("mock-key-{i:08}"), "rate_limit": 60, "rate_limit_period": 60,
                "config": {"model": "bench-model"}}]});
            http.post(format!("{base}/workspace/register"))
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16() == 201)
                .unwrap_or(false)
        }));
    }
    let mut failed = 0;
    for t in tasks {
        if !t.await? {
            failed += 1;
        }
    }
    anyhow::ensure!(failed == 0, "{failed} registrations failed");
    let register_seconds = start.elapsed().as_secs_f64();
    let rss_after_register_mib = rss_mib();
    app.stop().await;

    let t0 = Instant::now();
    let engine = Engine::start(engine_config(args, db_url)).await?;
    let restart = t0.elapsed().as_secs_f64();
    let rss_after_restart_mib = rss_mib();
    engine.shutdown(Duration::from_secs(5)).await;
    Ok(WorkspacesReport {
        workspaces: count,
        register_seconds,
        rss_after_register_mib,
        restart_to_ready_seconds: restart,
        rss_after_restart_mib,
    })
}

fn print_table(r: &Report) {
    println!(
        "ai-rate-limiter bench — {} cores, database {}, queue {}, {} keys, {} workers, provider latency {} ms, limit {}",
        r.machine_cores,
        r.database,
        r.queue,
        r.keys,
        r.workers,
        r.latency_ms,
        r.rate_limit
            .map(|l| format!("{l}/{}s per key", r.period_s))
            .unwrap_or_else(|| "not binding".into())
    );
    if let Some(b) = r.baseline_per_s {
        println!("baseline (stand-in called directly, same concurrency): {b:.0} req/s");
    }
    if !r.runs.is_empty() {
        println!(
            "{:<7} {:>8} {:>9} {:>10} {:>7} {:>9} {:>9} {:>10} {:>10} {:>8} {:>7}",
            "mode",
            "msgs",
            "secs",
            "msg/s",
            "ratio",
            "pub p50",
            "pub p99",
            "disp p50",
            "disp p99",
            "util",
            "over"
        );
        for run in &r.runs {
            println!(
                "{:<7} {:>8} {:>9.2} {:>10.0} {:>7} {:>7.2}ms {:>7.2}ms {:>8.2}ms {:>8.2}ms {:>8} {:>7}",
                run.mode,
                run.messages,
                run.seconds,
                run.messages_per_s,
                run.ratio_to_baseline
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_else(|| "-".into()),
                run.publish_p50_ms,
                run.publish_p99_ms,
                run.dispatch_p50_ms,
                run.dispatch_p99_ms,
                run.utilisation
                    .map(|u| format!("{:.2}%", u * 100.0))
                    .unwrap_or_else(|| "-".into()),
                run.windows_over_limit
            );
        }
    }
    if let Some(w) = &r.workspaces {
        println!(
            "workspaces: {} registered in {:.2}s, RSS {:.0} MiB; restart to ready {:.2}s, RSS {:.0} MiB",
            w.workspaces,
            w.register_seconds,
            w.rss_after_register_mib,
            w.restart_to_ready_seconds,
            w.rss_after_restart_mib
        );
    }
    println!("peak RSS (whole bench process): {:.0} MiB", r.peak_rss_mib);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let tmp = std::env::temp_dir().join(format!("airl-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&tmp)?;
    let db_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", tmp.join("bench.db").display()));
    let mut report = Report {
        machine_cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        database: db_url.split(':').next().unwrap_or_default().to_owned(),
        queue: if args.rabbitmq_url.is_some() {
            "rabbitmq"
        } else {
            "memory"
        }
        .into(),
        keys: args.keys,
        workers: args.workers,
        latency_ms: args.latency_ms,
        rate_limit: args.rate_limit,
        period_s: args.period,
        ..Default::default()
    };
    if let Some(count) = args.workspaces {
        report.workspaces = Some(run_workspaces(&args, &db_url, count).await?);
    } else {
        let stand_in = StandIn::start(Duration::from_millis(args.latency_ms)).await?;
        if !args.no_baseline {
            report.baseline_per_s =
                Some(baseline(&stand_in, args.messages, args.workers as usize).await?);
        }
        let app = start_app(engine_config(&args, &db_url)).await?;
        let modes = match args.mode {
            Mode::Both => vec![Mode::Single, Mode::Batch],
            m => vec![m],
        };
        for mode in modes {
            let run = run_mode(&args, &app, &stand_in, mode, report.baseline_per_s).await?;
            report.runs.push(run);
        }
        app.stop().await;
    }
    report.peak_rss_mib = peak_rss_mib();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
