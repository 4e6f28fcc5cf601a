// Command peers: Go goroutine peer benchmarks for braid (impl "go").
//
// Every bench runs one uncounted warm-up repetition and then `runs`
// repetitions; each repetition times a loop with time.Now and divides by the
// number of ops. The median per-op value is reported.
//
//	spawn_join        go func(){ wg.Done() }() then wg.Wait() for that one
//	                  goroutine; ns per spawn+join.
//	spawn_join_batch  spawn 10,000 goroutines, then wait for all of them;
//	                  ns per goroutine.
//	task_switch       two goroutines ping-pong via runtime.Gosched() under
//	                  GOMAXPROCS(1); ns per yield.
//	scope_timeout     context.WithTimeout(parent, 1h) then cancel(); ns/op.
//	cancel_100k       100,000 goroutines parked in select on ctx.Done(); ms
//	                  from cancel() until all have exited (sync.WaitGroup).
//	idle_task_mem     RSS growth (/proc/self/statm) per goroutine parked on a
//	                  channel receive, 100,000 goroutines; bytes/task. Each
//	                  repetition runs in a fresh child process so memory freed
//	                  by an earlier repetition cannot be reused.
//
// Synchronization benches (bench/c/bench_sync.c is the braid side):
//
//	lock_uncontended_task  sync.Mutex Lock+Unlock in one goroutine; ns per
//	                  pair.
//	lock_pingpong     two goroutines under GOMAXPROCS(1) take turns holding
//	                  one sync.Mutex: Lock, Gosched (the other one runs and
//	                  blocks in Lock), Unlock, Gosched (the woken one takes
//	                  it before the releaser can lock again). Nearly every
//	                  Lock waits, but sync.Mutex does not hand over (outside
//	                  starvation mode) and now and then the releaser runs
//	                  first and barges back in (about 1 acquisition in 30 on
//	                  the project's machine), so the time is divided by the
//	                  acquisitions that actually changed hands; ns per
//	                  hand-off of the mutex.
//	channel_buffered  one goroutine sends ints into a chan of capacity 1024,
//	                  another receives them, GOMAXPROCS(1); msg/s.
//	channel_rendezvous  the same over an unbuffered chan; msg/s.
//	task_thread_handoff  two goroutines ping-pong a token over two
//	                  unbuffered channels with GOMAXPROCS(2) (goroutines are
//	                  Go's tasks and its threads); ns per one-way hand-off.
//
// Thread bridge benches (bench/c/bench_bridge.c is the braid side). Go has
// no plain threads and no separate pool for blocking work: goroutines are
// both.
//
//	to_thread_roundtrip  go func(){ reply <- fn() }() then <-reply, fn
//	                  trivial; ns per call. The new goroutine usually runs
//	                  on the caller's P as soon as the caller blocks, so this
//	                  is mostly not a cross-thread round trip.
//	from_thread_run_roundtrip  the same from a goroutine locked to its OS
//	                  thread (runtime.LockOSThread): its thread sleeps while
//	                  the new goroutine runs on another one; ns per call.
//	portal_call       a goroutine locked to its OS thread sends a request
//	                  (a trivial func and a reply channel) over an
//	                  unbuffered channel to a server goroutine, which runs it
//	                  and replies; ns per call.
//
// Except for task_switch, lock_pingpong and the channel benches, benches use
// the default GOMAXPROCS (= CPU count).
//
// Usage: peers [--json] [--quick]   (--quick: ~10x fewer iterations for the
// per-op benches; cancel_100k and idle_task_mem keep 100,000 goroutines)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	runs      = 5
	memRuns   = 3
	batchSize = 10_000
	manyTasks = 100_000
)

// measure runs rep once as a warm-up, then n counted times; returns the median.
func measure(n int, rep func() float64) float64 {
	rep()
	v := make([]float64, n)
	for i := range v {
		v[i] = rep()
	}
	sort.Float64s(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func nsPer(start time.Time, ops int) float64 {
	return float64(time.Since(start).Nanoseconds()) / float64(ops)
}

func spawnJoin(n int) float64 {
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { wg.Done() }()
		wg.Wait()
	}
	return nsPer(start, n)
}

func spawnJoinBatch(batches int) float64 {
	var wg sync.WaitGroup
	start := time.Now()
	for b := 0; b < batches; b++ {
		wg.Add(batchSize)
		for i := 0; i < batchSize; i++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
	}
	return nsPer(start, batches*batchSize)
}

func taskSwitch(n int) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var wg sync.WaitGroup
	wg.Add(2)
	body := func() {
		for i := 0; i < n; i++ {
			runtime.Gosched()
		}
		wg.Done()
	}
	start := time.Now()
	go body()
	go body()
	wg.Wait()
	return nsPer(start, 2*n)
}

func scopeTimeout(n int) float64 {
	parent := context.Background()
	start := time.Now()
	for i := 0; i < n; i++ {
		_, cancel := context.WithTimeout(parent, time.Hour)
		cancel()
	}
	return nsPer(start, n)
}

// cancelAll returns ms from cancel() until `tasks` parked goroutines exited.
func cancelAll(tasks int) float64 {
	ctx, cancel := context.WithCancel(context.Background())
	var started, exited sync.WaitGroup
	started.Add(tasks)
	exited.Add(tasks)
	for i := 0; i < tasks; i++ {
		go func() {
			started.Done()
			select {
			case <-ctx.Done():
			}
			exited.Done()
		}()
	}
	started.Wait()
	time.Sleep(10 * time.Millisecond) // let the last few actually park
	start := time.Now()
	cancel()
	exited.Wait()
	return float64(time.Since(start).Nanoseconds()) / 1e6
}

func lockUncontended(n int) float64 {
	var mu sync.Mutex
	start := time.Now()
	for i := 0; i < n; i++ {
		mu.Lock()
		mu.Unlock() //nolint:staticcheck // the empty critical section is the point
	}
	return nsPer(start, n)
}

// lockPingpong returns ns per hand-off of a mutex between two goroutines.
func lockPingpong(n int) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var mu sync.Mutex
	var wg sync.WaitGroup
	last, handoffs := -1, 0 // guarded by mu
	wg.Add(2)
	body := func(me int) {
		for i := 0; i < n; i++ {
			mu.Lock()
			if last != me {
				last = me
				handoffs++
			}
			runtime.Gosched()
			mu.Unlock()
			runtime.Gosched()
		}
		wg.Done()
	}
	start := time.Now()
	go body(0)
	go body(1)
	wg.Wait()
	elapsed := time.Since(start)
	if handoffs < n { // a few barges are normal (see the comment at the top)
		fmt.Fprintf(os.Stderr, "lock_pingpong: only %d of %d acquisitions were hand-offs\n", handoffs, 2*n)
	}
	return float64(elapsed.Nanoseconds()) / float64(handoffs)
}

// channelThroughput returns messages per second from one goroutine to
// another through a chan of capacity `buffer` (GOMAXPROCS(1)).
func channelThroughput(n, buffer int) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ch := make(chan int, buffer)
	done := make(chan int)
	go func() {
		got := 0
		for v := range ch {
			if v != got {
				panic("channel bench: out of order")
			}
			got++
		}
		done <- got
	}()
	start := time.Now()
	for i := 0; i < n; i++ {
		ch <- i
	}
	close(ch)
	if got := <-done; got != n {
		panic("channel bench: lost messages")
	}
	return float64(n) / time.Since(start).Seconds()
}

// taskThreadHandoff returns ns per one-way hand-off of a token between two
// goroutines over two unbuffered channels (GOMAXPROCS(2)).
func taskThreadHandoff(n int) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	ping, pong := make(chan struct{}), make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			<-ping
			pong <- struct{}{}
		}
	}()
	start := time.Now()
	for i := 0; i < n; i++ {
		ping <- struct{}{}
		<-pong
	}
	return nsPer(start, 2*n)
}

func nop() int { return 0 }

// toThreadRoundtrip returns ns per goroutine started to run a trivial
// function, waited for through a reply channel.
func toThreadRoundtrip(n int) float64 {
	reply := make(chan int)
	call := func() {
		go func() { reply <- nop() }()
		if <-reply != 0 {
			panic("to_thread_roundtrip: bad result")
		}
	}
	call() // warm
	start := time.Now()
	for i := 0; i < n; i++ {
		call()
	}
	return nsPer(start, n)
}

// onLockedThread runs f in a new goroutine locked to its own OS thread and
// returns its result.
func onLockedThread(f func() float64) float64 {
	out := make(chan float64)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		out <- f()
	}()
	return <-out
}

// fromThreadRunRoundtrip: toThreadRoundtrip from a locked OS thread.
func fromThreadRunRoundtrip(n int) float64 {
	return onLockedThread(func() float64 { return toThreadRoundtrip(n) })
}

type portalRequest struct {
	fn    func() int
	reply chan int
}

// portalCall returns ns per request served by a server goroutine for a
// goroutine locked to its OS thread.
func portalCall(n int) float64 {
	requests := make(chan portalRequest)
	go func() {
		for r := range requests {
			r.reply <- r.fn()
		}
	}()
	defer close(requests)
	return onLockedThread(func() float64 {
		reply := make(chan int)
		call := func() {
			requests <- portalRequest{nop, reply}
			if <-reply != 0 {
				panic("portal_call: bad result")
			}
		}
		call() // warm
		start := time.Now()
		for i := 0; i < n; i++ {
			call()
		}
		return nsPer(start, n)
	})
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		panic(err)
	}
	pages, err := strconv.ParseInt(strings.Fields(string(b))[1], 10, 64)
	if err != nil {
		panic(err)
	}
	return pages * int64(os.Getpagesize())
}

// idleMemChild (run in a fresh process) parks `tasks` goroutines on a
// channel and prints the RSS growth per goroutine.
func idleMemChild(tasks int) {
	ch := make(chan struct{})
	var started sync.WaitGroup
	started.Add(tasks)
	runtime.GC()
	before := rssBytes()
	for i := 0; i < tasks; i++ {
		go func() {
			started.Done()
			<-ch
		}()
	}
	started.Wait()
	fmt.Println(float64(rssBytes()-before) / float64(tasks))
}

func idleMem(tasks int) float64 {
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	out, err := exec.Command(self, "-idle-mem-child", strconv.Itoa(tasks)).Output()
	if err != nil {
		panic(err)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		panic(err)
	}
	return v
}

func main() {
	jsonOut := flag.Bool("json", false, "print one JSON object per line")
	quick := flag.Bool("quick", false, "~10x fewer iterations (CI smoke)")
	child := flag.Int("idle-mem-child", 0, "internal: run one idle_task_mem repetition")
	flag.Parse()
	if *child > 0 {
		idleMemChild(*child)
		return
	}

	scale := 1
	if *quick {
		scale = 10
	}
	if !*jsonOut {
		fmt.Printf("%-22s %-6s %12s  %-10s %s\n", "bench", "impl", "median", "unit", "runs")
	}
	report := func(bench, unit string, n int, median float64) {
		if *jsonOut {
			fmt.Printf("{\"bench\": %q, \"impl\": \"go\", \"unit\": %q, \"median\": %.2f, \"runs\": %d}\n",
				bench, unit, median, n)
		} else {
			fmt.Printf("%-22s %-6s %12.2f  %-10s %d\n", bench, "go", median, unit, n)
		}
	}

	report("spawn_join", "ns/op", runs, measure(runs, func() float64 { return spawnJoin(1_000_000 / scale) }))
	report("spawn_join_batch", "ns/op", runs, measure(runs, func() float64 { return spawnJoinBatch(50 / scale) }))
	report("task_switch", "ns/op", runs, measure(runs, func() float64 { return taskSwitch(1_000_000 / scale) }))
	report("scope_timeout", "ns/op", runs, measure(runs, func() float64 { return scopeTimeout(1_000_000 / scale) }))
	report("cancel_100k", "ms", runs, measure(runs, func() float64 { return cancelAll(manyTasks) }))
	report("idle_task_mem", "bytes/task", memRuns, measure(memRuns, func() float64 { return idleMem(manyTasks) }))
	report("lock_uncontended_task", "ns/op", runs, measure(runs, func() float64 { return lockUncontended(20_000_000 / scale) }))
	report("lock_pingpong", "ns/op", runs, measure(runs, func() float64 { return lockPingpong(1_000_000 / scale) }))
	report("task_thread_handoff", "ns/op", runs, measure(runs, func() float64 { return taskThreadHandoff(200_000 / scale) }))
	report("channel_buffered", "msg/s", runs, measure(runs, func() float64 { return channelThroughput(5_000_000/scale, 1024) }))
	report("channel_rendezvous", "msg/s", runs, measure(runs, func() float64 { return channelThroughput(2_000_000/scale, 0) }))
	report("to_thread_roundtrip", "ns/op", runs, measure(runs, func() float64 { return toThreadRoundtrip(200_000 / scale) }))
	report("from_thread_run_roundtrip", "ns/op", runs, measure(runs, func() float64 { return fromThreadRunRoundtrip(50_000 / scale) }))
	report("portal_call", "ns/op", runs, measure(runs, func() float64 { return portalCall(50_000 / scale) }))
}
