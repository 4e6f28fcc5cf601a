//! braid-bench-tokio: tokio peer benchmarks for braid (impl "tokio").
//!
//! Everything runs on a current_thread runtime. Every bench runs one
//! uncounted warm-up repetition and then `RUNS` repetitions; each repetition
//! times a loop with `Instant` and divides by the number of ops. The median
//! per-op value is reported.
//!
//! - `spawn_join`: `tokio::spawn(async {})` then await its JoinHandle; ns/op.
//! - `spawn_join_batch`: spawn 10,000 tasks, then await all; ns per task.
//! - `task_switch`: two tasks looping on `tokio::task::yield_now()`; ns per
//!   yield (tokio defers yielded tasks until the scheduler polls its driver,
//!   so this includes that bookkeeping).
//! - `scope_timeout`: `tokio::time::timeout(3600s, async {})` awaited; ns/op.
//!   Closest analogue to entering/leaving a scope with a deadline. Note that
//!   tokio registers the timer lazily and the inner future is ready at once,
//!   so no timer-wheel insertion happens here (Go's WithTimeout does arm one).
//! - `cancel_100k`: 100,000 tasks parked on a `tokio::sync::watch` receiver;
//!   ms from the `send` until every task has been joined.
//! - `idle_task_mem`: RSS growth (/proc/self/statm) per task parked on a
//!   watch receiver, 100,000 tasks; bytes/task. Each repetition runs in a
//!   fresh child process so memory freed earlier cannot be reused.
//!
//! Usage: braid-bench-tokio [--json] [--quick]   (--quick: ~10x fewer
//! iterations for the per-op benches; the 100,000-task benches keep 100,000)

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::yield_now;

const RUNS: usize = 5;
const MEM_RUNS: usize = 3;
const BATCH: usize = 10_000;
const MANY_TASKS: usize = 100_000;

/// Runs `rep` once as a warm-up, then `runs` counted times; returns the median.
async fn measure<F, Fut>(runs: usize, mut rep: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = f64>,
{
    rep().await;
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        v.push(rep().await);
    }
    v.sort_by(f64::total_cmp);
    if runs % 2 == 1 {
        v[runs / 2]
    } else {
        (v[runs / 2 - 1] + v[runs / 2]) / 2.0
    }
}

fn ns_per(start: Instant, ops: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / ops as f64
}

async fn spawn_join(n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        tokio::spawn(async {}).await.unwrap();
    }
    ns_per(start, n)
}

async fn spawn_join_batch(batches: usize) -> f64 {
    let mut handles = Vec::with_capacity(BATCH);
    let start = Instant::now();
    for _ in 0..batches {
        handles.extend((0..BATCH).map(|_| tokio::spawn(async {})));
        for h in handles.drain(..) {
            h.await.unwrap();
        }
    }
    ns_per(start, batches * BATCH)
}

async fn task_switch(n: usize) -> f64 {
    let yielder = || {
        tokio::spawn(async move {
            for _ in 0..n {
                yield_now().await;
            }
        })
    };
    let start = Instant::now();
    let (a, b) = (yielder(), yielder());
    a.await.unwrap();
    b.await.unwrap();
    ns_per(start, 2 * n)
}

async fn scope_timeout(n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(3600), async {})
            .await
            .unwrap();
    }
    ns_per(start, n)
}

/// Spawns `tasks` tasks that each wait for a change on `rx`, and returns once
/// all of them are parked. On a current_thread runtime a task that bumped the
/// counter has also registered its waker (same poll).
async fn spawn_parked(tasks: usize, rx: &watch::Receiver<()>) -> Vec<tokio::task::JoinHandle<()>> {
    let parked = Arc::new(AtomicUsize::new(0));
    let handles = (0..tasks)
        .map(|_| {
            let (mut rx, parked) = (rx.clone(), parked.clone());
            tokio::spawn(async move {
                parked.fetch_add(1, Relaxed);
                let _ = rx.changed().await;
            })
        })
        .collect();
    while parked.load(Relaxed) < tasks {
        yield_now().await;
    }
    handles
}

/// Returns ms from the broadcast until `tasks` parked tasks have been joined.
async fn cancel_all(tasks: usize) -> f64 {
    let (tx, rx) = watch::channel(());
    let handles = spawn_parked(tasks, &rx).await;
    let start = Instant::now();
    tx.send(()).unwrap();
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed().as_secs_f64() * 1e3
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// One idle_task_mem repetition, run in a fresh process: prints RSS growth per
/// parked task and exits without tearing the tasks down.
async fn idle_mem_child(tasks: usize) -> ! {
    let (_tx, rx) = watch::channel(());
    let before = rss_bytes();
    let handles = spawn_parked(tasks, &rx).await;
    let after = rss_bytes();
    drop(handles);
    println!("{}", (after - before) as f64 / tasks as f64);
    std::process::exit(0);
}

async fn idle_mem(tasks: usize) -> f64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--idle-mem-child", &tasks.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "idle-mem child failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (mut json, mut quick) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--quick" => quick = true,
            "--idle-mem-child" => {
                idle_mem_child(args.next().and_then(|s| s.parse().ok()).unwrap()).await
            }
            _ => {
                eprintln!("usage: braid-bench-tokio [--json] [--quick]");
                std::process::exit(2);
            }
        }
    }
    let scale = if quick { 10 } else { 1 };
    if !json {
        println!(
            "{:<18} {:<6} {:>12}  {:<10} runs",
            "bench", "impl", "median", "unit"
        );
    }
    let report = |bench: &str, unit: &str, runs: usize, median: f64| {
        if json {
            println!(
                r#"{{"bench": "{bench}", "impl": "tokio", "unit": "{unit}", "median": {median:.2}, "runs": {runs}}}"#
            );
        } else {
            println!(
                "{bench:<18} {:<6} {median:>12.2}  {unit:<10} {runs}",
                "tokio"
            );
        }
    };

    report(
        "spawn_join",
        "ns/op",
        RUNS,
        measure(RUNS, || spawn_join(1_000_000 / scale)).await,
    );
    report(
        "spawn_join_batch",
        "ns/op",
        RUNS,
        measure(RUNS, || spawn_join_batch(50 / scale)).await,
    );
    report(
        "task_switch",
        "ns/op",
        RUNS,
        measure(RUNS, || task_switch(1_000_000 / scale)).await,
    );
    report(
        "scope_timeout",
        "ns/op",
        RUNS,
        measure(RUNS, || scope_timeout(1_000_000 / scale)).await,
    );
    report(
        "cancel_100k",
        "ms",
        RUNS,
        measure(RUNS, || cancel_all(MANY_TASKS)).await,
    );
    report(
        "idle_task_mem",
        "bytes/task",
        MEM_RUNS,
        measure(MEM_RUNS, || idle_mem(MANY_TASKS)).await,
    );
}
