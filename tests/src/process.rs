//! The agent as a process of its own (`jailer run` inside a test's
//! namespace), for tests that kill it, limit it, measure it or start two:
//! waited for on its control socket, killed on drop. And one-shot runs of
//! the command line with a bounded wait.

use std::{
    path::Path,
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use jailer::agent::control::{self, Request, Response};

use crate::NetNs;

/// How long an agent process may take to answer on its socket.
const UP_WITHIN: Duration = Duration::from_secs(15);

/// `jailer run` in a namespace; killed (SIGKILL) and reaped on drop.
pub struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    /// `BIN run --config CONFIG` in `ns`, behind `prefix` (e.g. `prlimit
    /// --nofile=64:64`); returns once it answers `status` on the control
    /// socket of `state_dir`. `ip netns exec` and `prlimit` exec the next
    /// command, so the child's pid is the agent's.
    pub fn start(bin: &str, ns: &NetNs, config: &Path, state_dir: &Path, prefix: &[&str]) -> Self {
        let mut agent = Self {
            child: Self::command(bin, ns, config, prefix)
                .spawn()
                .expect("spawn the agent"),
        };
        let start = Instant::now();
        while !matches!(
            control::ask(state_dir, &Request::Status),
            Ok(Some(Response::Status { .. }))
        ) {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("the agent exited before it answered: {status}");
            }
            assert!(
                start.elapsed() < UP_WITHIN,
                "the agent did not answer on its socket within {UP_WITHIN:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    /// The command [`AgentProcess::start`] runs.
    pub fn command(bin: &str, ns: &NetNs, config: &Path, prefix: &[&str]) -> Command {
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.extend(["ip", "netns", "exec", &ns.name, bin, "run", "--config"]);
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]).arg(config).stdin(Stdio::null());
        cmd
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reaped.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and how it ended (bounded: SIGKILL after `limit`).
    pub fn terminate(mut self, limit: Duration) -> Option<ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        wait_bounded(&mut self.child, limit)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` at most `limit`; kills it (and says `None`) past that.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` to its end with stdout and stderr captured; panics when it
/// takes longer than `limit` (it is killed first).
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Drain both pipes while waiting, so a chatty command cannot block.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let status = wait_bounded(&mut child, limit);
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let Some(status) = status else {
        panic!(
            "{cmd:?} did not finish within {limit:?}: {}",
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// (user + system CPU time, in clock ticks) of a process so far.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A `Vm*` line of `/proc/PID/status`, in KiB.
pub fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}
