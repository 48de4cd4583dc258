//! Attributing a new connection to its process the way most tools do it
//! (the baseline sluice's eBPF socket attribution is to be measured
//! against): a netlink `SOCK_DIAG_BY_FAMILY` lookup of the socket's inode,
//! then a walk of every process's `/proc/<pid>/fd`, with `n` sockets open
//! in this process (`n/2` loopback TCP connections, both ends), for the
//! newest connection (the highest descriptor, found last).
//!
//! - `process/sock_diag_proc_walk/<n>`: per attribution.
//! - `process/sock_diag_only/<n>`: the netlink lookup alone.
//!
//! sluice attributes in the kernel when the socket is made (its cost per
//! connection is measured by the lab benchmark, which can attach the
//! hooks); what it does in user space happens once per `execve`:
//! - `process/exec_verdict/cached`: the exec watcher's decision for a
//!   program it has seen (file identity lookup, pattern match, per-process
//!   state), 20 patterns configured;
//! - `process/exec_verdict/first_sight`: the same for a program never seen
//!   (reads its header and `PT_INTERP`, matches).
use std::{
    hint::black_box,
    net::{TcpListener, TcpStream},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_sys::sock_diag::{Proto, process_of_inode, socket_inode};

fn attribution(crit: &mut Criterion) {
    sluice_bench::raise_nofile();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("addr");
    let mut open: Vec<(TcpStream, TcpStream)> = Vec::new();
    let mut g = crit.benchmark_group("process");
    g.throughput(Throughput::Elements(1));
    for n in [1_000usize, 10_000] {
        while open.len() * 2 < n {
            let c = TcpStream::connect(server).expect("connect (raise ulimit -n?)");
            let (a, _) = listener.accept().expect("accept");
            open.push((c, a));
        }
        let newest = &open[open.len() - 1].0;
        let local = newest.local_addr().expect("addr");
        g.bench_with_input(BenchmarkId::new("sock_diag_only", n), &n, |b, _| {
            b.iter(|| black_box(socket_inode(Proto::Tcp, local, server).expect("diag")));
        });
        g.bench_with_input(BenchmarkId::new("sock_diag_proc_walk", n), &n, |b, _| {
            b.iter(|| {
                let inode = socket_inode(Proto::Tcp, local, server)
                    .expect("diag")
                    .expect("known");
                black_box(process_of_inode(inode).expect("found"))
            });
        });
    }
    g.finish();
}

fn exec_verdict(crit: &mut Criterion) {
    use sluice_core::process::{ProcessPattern, ProcessSet};
    use sluice_gateway::endpoint::exec::{ExecTracker, FactsCache, MountDevs};
    let mut patterns: Vec<ProcessPattern> = (0..18)
        .map(|i| ProcessPattern::parse(&format!("agent-{i}")).expect("pattern"))
        .collect();
    patterns.push(ProcessPattern::parse("/opt/**/bin/updater*").expect("pattern"));
    patterns.push(ProcessPattern::parse("/usr/lib/**/helper").expect("pattern"));
    let set = ProcessSet::new(patterns);
    let exe = std::fs::read_link("/proc/self/exe").expect("exe");
    let path = exe.to_string_lossy().into_owned();
    let file = std::fs::File::open(&exe).expect("open");
    let mut g = crit.benchmark_group("process");
    g.throughput(Throughput::Elements(1));
    let mut cache = FactsCache::default();
    let mut tracker = ExecTracker::default();
    let now = std::time::Instant::now();
    let key = (1, 2);
    g.bench_function("exec_verdict/cached", |b| {
        b.iter(|| {
            let f = cache.facts(&file, &path, &set).expect("facts");
            black_box(tracker.on_exec(4242, &f, key, now))
        });
    });
    g.bench_function("exec_verdict/first_sight", |b| {
        b.iter(|| {
            cache.clear();
            let f = cache.facts(&file, &path, &set).expect("facts");
            black_box(tracker.on_exec(4242, &f, key, now))
        });
    });
    // What the watcher adds per exec to name the file the verdict is for
    // (one statx; the mount table is read once): compare with
    // exec_verdict/cached.
    let mut mounts = MountDevs::default();
    g.bench_function("exec_verdict/file_key", |b| {
        b.iter(|| black_box(mounts.file_key(&file).expect("file key")));
    });
    g.finish();
}

criterion_group!(benches, attribution, exec_verdict);
criterion_main!(benches);
