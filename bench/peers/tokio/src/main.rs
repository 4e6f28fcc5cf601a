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
//! Synchronization benches (bench/c/bench_sync.c is the braid side):
//!
//! - `lock_uncontended_task`: `tokio::sync::Mutex::lock().await` and drop of
//!   the guard in one task; ns per pair (includes tokio's cooperative budget,
//!   which makes every 128th acquisition yield).
//! - `lock_pingpong`: two tasks take turns holding one tokio Mutex: lock,
//!   `yield_now` while holding it (the other task runs and queues in
//!   `lock`), drop. tokio's Mutex is fair (permits go to the first waiter),
//!   so every acquisition but the first waits; ns per hand-off.
//! - `channel_buffered`: one task sends `u64`s into `mpsc::channel(1024)`,
//!   another receives them; msg/s.
//! - `channel_rendezvous`: the same with `mpsc::channel(1)`: tokio has no
//!   zero-capacity channel, so this is capacity 1, not a true rendezvous.
//! - `task_thread_handoff`: a tokio task and a `std::thread` ping-pong a token
//!   through two `mpsc::channel(1)`s, the thread side with `blocking_send` /
//!   `blocking_recv`; ns per one-way hand-off.
//!
//! Thread bridge benches (bench/c/bench_bridge.c is the braid side):
//!
//! - `to_thread_roundtrip`: `spawn_blocking(|| 0).await` in a loop on the
//!   current_thread runtime, blocking pool warm (one untimed call first);
//!   ns per call.
//! - `from_thread_run_roundtrip`: a plain `std::thread` runs a trivial task
//!   on a current_thread runtime driven by another thread:
//!   `handle.spawn(async move { tx.send(()) })`, then `rx.recv()` on a
//!   `std::sync::mpsc` reply channel (one channel for the whole loop); ns per
//!   call.
//! - `portal_call`: a plain `std::thread` sends a job (a boxed trivial
//!   future and a `oneshot::Sender`) over an unbounded `mpsc` to a server
//!   task on a current_thread runtime driven by another thread; the server
//!   awaits the job and replies, the caller waits in `blocking_recv`; ns per
//!   call. (The job runs inside the server task, not as a task of its own.)
//!
//! Usage: braid-bench-tokio [--json] [--quick]   (--quick: ~10x fewer
//! iterations for the per-op benches; the 100,000-task benches keep 100,000)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
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

async fn lock_uncontended(n: usize) -> f64 {
    let m = Mutex::new(());
    let start = Instant::now();
    for _ in 0..n {
        drop(m.lock().await);
    }
    ns_per(start, n)
}

/// Returns ns per hand-off of a Mutex between two tasks.
async fn lock_pingpong(n: usize) -> f64 {
    // (last owner, hand-offs), guarded by the mutex itself
    let m = Arc::new(Mutex::new((usize::MAX, 0usize)));
    let taker = |me: usize| {
        let m = m.clone();
        tokio::spawn(async move {
            for _ in 0..n {
                let mut g = m.lock().await;
                if g.0 != me {
                    *g = (me, g.1 + 1);
                }
                yield_now().await;
                drop(g);
            }
        })
    };
    let start = Instant::now();
    let (a, b) = (taker(0), taker(1));
    a.await.unwrap();
    b.await.unwrap();
    let elapsed = start.elapsed().as_nanos() as f64;
    let handoffs = m.lock().await.1;
    if handoffs < 2 * n - 1 {
        eprintln!(
            "lock_pingpong: only {handoffs} of {} acquisitions were hand-offs",
            2 * n
        );
    }
    elapsed / handoffs as f64
}

/// Returns messages per second from one task to another through
/// `mpsc::channel(capacity)`.
async fn channel_throughput(n: usize, capacity: usize) -> f64 {
    let (tx, mut rx) = mpsc::channel::<u64>(capacity);
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        for i in 0..n as u64 {
            tx.send(i).await.unwrap();
        }
    });
    let receiver = tokio::spawn(async move {
        let mut got = 0u64;
        while let Some(v) = rx.recv().await {
            assert_eq!(v, got, "channel bench: out of order");
            got += 1;
        }
        got
    });
    sender.await.unwrap();
    assert_eq!(
        receiver.await.unwrap(),
        n as u64,
        "channel bench: lost messages"
    );
    n as f64 / start.elapsed().as_secs_f64()
}

/// Returns ns per one-way hand-off of a token between a tokio task and a
/// plain thread.
async fn task_thread_handoff(n: usize) -> f64 {
    let (ping_tx, mut ping_rx) = mpsc::channel::<()>(1);
    let (pong_tx, mut pong_rx) = mpsc::channel::<()>(1);
    let thread = std::thread::spawn(move || {
        for _ in 0..n {
            ping_rx.blocking_recv().unwrap();
            pong_tx.blocking_send(()).unwrap();
        }
    });
    let start = Instant::now();
    tokio::spawn(async move {
        for _ in 0..n {
            ping_tx.send(()).await.unwrap();
            pong_rx.recv().await.unwrap();
        }
    })
    .await
    .unwrap();
    let elapsed = ns_per(start, 2 * n);
    thread.join().unwrap();
    elapsed
}

/// Returns ns per `spawn_blocking` round trip of a trivial closure.
async fn to_thread_roundtrip(n: usize) -> f64 {
    assert_eq!(tokio::task::spawn_blocking(|| 0).await.unwrap(), 0); // warm pool
    let start = Instant::now();
    for _ in 0..n {
        assert_eq!(tokio::task::spawn_blocking(|| 0).await.unwrap(), 0);
    }
    ns_per(start, n)
}

/// Runs `caller` on a plain thread against a current_thread runtime driven by
/// another thread until `serve` returns, and returns what `caller` returns.
/// Blocks the calling thread (the main runtime has nothing else to run).
fn with_remote_runtime<S, Fut>(serve: S, caller: impl FnOnce(Handle) -> f64 + Send) -> f64
where
    S: FnOnce() -> Fut + Send,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    std::thread::scope(|s| {
        s.spawn(move || rt.block_on(serve()));
        s.spawn(move || caller(handle)).join().unwrap()
    })
}

/// Returns ns per trivial task run on a runtime on another thread from a
/// plain thread, the caller waiting on a std mpsc channel for its reply.
fn from_thread_run_roundtrip(n: usize) -> f64 {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    with_remote_runtime(
        move || async move {
            let _ = stop_rx.await;
        },
        move |handle| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let call = || {
                let tx = tx.clone();
                handle.spawn(async move { tx.send(()).unwrap() });
                rx.recv().unwrap();
            };
            call(); // warm
            let start = Instant::now();
            for _ in 0..n {
                call();
            }
            let elapsed = ns_per(start, n);
            stop_tx.send(()).unwrap();
            elapsed
        },
    )
}

type Job = (
    Pin<Box<dyn Future<Output = ()> + Send>>,
    oneshot::Sender<()>,
);

/// Returns ns per call of a trivial job through a server task on a runtime
/// on another thread, from a plain thread.
fn portal_call(n: usize) -> f64 {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    with_remote_runtime(
        move || async move {
            tokio::spawn(async move {
                while let Some((job, reply)) = rx.recv().await {
                    job.await;
                    let _ = reply.send(());
                }
            })
            .await
            .unwrap();
        },
        move |_| {
            let call = || {
                let (reply_tx, reply_rx) = oneshot::channel();
                tx.send((Box::pin(async {}), reply_tx)).unwrap();
                reply_rx.blocking_recv().unwrap();
            };
            call(); // warm
            let start = Instant::now();
            for _ in 0..n {
                call();
            }
            ns_per(start, n) // dropping tx ends the server
        },
    )
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
            "{:<22} {:<6} {:>12}  {:<10} runs",
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
                "{bench:<22} {:<6} {median:>12.2}  {unit:<10} {runs}",
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
    report(
        "lock_uncontended_task",
        "ns/op",
        RUNS,
        measure(RUNS, || lock_uncontended(10_000_000 / scale)).await,
    );
    report(
        "lock_pingpong",
        "ns/op",
        RUNS,
        measure(RUNS, || lock_pingpong(1_000_000 / scale)).await,
    );
    report(
        "task_thread_handoff",
        "ns/op",
        RUNS,
        measure(RUNS, || task_thread_handoff(20_000 / scale)).await,
    );
    report(
        "channel_buffered",
        "msg/s",
        RUNS,
        measure(RUNS, || channel_throughput(5_000_000 / scale, 1024)).await,
    );
    report(
        "channel_rendezvous",
        "msg/s",
        RUNS,
        measure(RUNS, || channel_throughput(2_000_000 / scale, 1)).await,
    );
    report(
        "to_thread_roundtrip",
        "ns/op",
        RUNS,
        measure(RUNS, || to_thread_roundtrip(50_000 / scale)).await,
    );
    report(
        "from_thread_run_roundtrip",
        "ns/op",
        RUNS,
        measure(RUNS, || async { from_thread_run_roundtrip(50_000 / scale) }).await,
    );
    report(
        "portal_call",
        "ns/op",
        RUNS,
        measure(RUNS, || async { portal_call(50_000 / scale) }).await,
    );
}
