//! The XDP object loaded unpinned, and single test runs of it.

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
