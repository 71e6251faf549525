//! The XDP object loaded unpinned, and single test runs of it; the
//! bench-only object (the reference program and probes).

/// The XDP object loaded (maps unpinned) and its program through the verifier.
pub fn load_xdp() -> aya::Ebpf {
    let mut ebpf = aya::EbpfLoader::new()
        .load(jailer::kernel::XDP_OBJECT)
        .expect("load object");
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(jailer_common::PROGRAM_NAME)
        .expect("program")
        .try_into()
        .expect("an XDP program");
    prog.load().expect("verifier accepts the program");
    ebpf
}

/// One BPF_PROG_TEST_RUN of `frame`: the XDP action.
pub fn xdp_verdict(ebpf: &aya::Ebpf, frame: &[u8]) -> u32 {
    use aya::programs::TestRun as _;
    let prog: &aya::programs::Xdp = ebpf
        .program(jailer_common::PROGRAM_NAME)
        .expect("program")
        .try_into()
        .expect("an XDP program");
    let mut opts = aya::programs::TestRunOptions::new();
    opts.data_in = Some(frame);
    prog.test_run(opts).expect("test run").return_value
}

/// Runs `f` on a thread pinned to `cpu`: BPF_PROG_TEST_RUN runs the program
/// on the calling CPU, so this chooses which CPU's per-CPU values it sees.
pub fn on_cpu<T: Send>(cpu: usize, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu).expect("a CPU number");
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                .expect("pin the thread to one CPU");
            f()
        })
        .join()
        .expect("pinned thread panicked")
    })
}

/// The bench-only object (jailer-bench-ebpf): `JAILER_BENCH_OBJECT`, which
/// `cargo xtask` sets, else where `cargo xtask build` puts it.
pub fn bench_object() -> Vec<u8> {
    let path = std::env::var_os("JAILER_BENCH_OBJECT").map_or_else(
        || {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/bpf/bpfel-unknown-none/release/jailer-bench")
        },
        std::path::PathBuf::from,
    );
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with `cargo xtask build` (or run `cargo xtask test`/`bench`)",
            path.display()
        )
    })
}

/// The bench object (maps created, unpinned) with `programs` loaded.
pub fn load_bench(programs: &[&str]) -> aya::Ebpf {
    let mut ebpf = aya::EbpfLoader::new()
        .load(&bench_object())
        .expect("load the bench object");
    for name in programs {
        let p: &mut aya::programs::Xdp = ebpf
            .program_mut(name)
            .expect("program")
            .try_into()
            .expect("an XDP program");
        p.load().expect("verifier accepts the bench program");
    }
    ebpf
}
