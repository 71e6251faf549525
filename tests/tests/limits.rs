//! Resource limits, as root: a full disk under `state_dir` and a missing
//! bpffs. The agent keeps protecting; what it cannot do, it says.

use std::{fs, io::Write, path::Path, time::Duration};

use jailer::{
    config::Config,
    kernel::{BanTable, MemBanTable, XdpBanTable},
};
use jailer_tests::{Agent, append_failure, ban, host, require_root, wait_for};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = umount2(self.0, MntFlags::MNT_DETACH);
    }
}

#[test]
#[ignore = "needs root"]
fn a_full_state_disk_does_not_stop_bans() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    mount(
        Some("tmpfs"),
        &state,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=64k,mode=0700"),
    )
    .unwrap();
    let _mounted = Mounted(&state);
    // Fill it up.
    let mut filler = fs::File::create(state.join("filler")).unwrap();
    while filler.write_all(&[0u8; 4096]).is_ok() {}
    drop(filler);

    let log = dir.path().join("mail.log");
    fs::write(&log, "").unwrap();
    let mut config = Config::parse(
        &dir.path().join("jailer.toml"),
        &format!(
            "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"{}\"\nmaxretry = 2\n",
            log.display()
        ),
    )
    .unwrap();
    config.state_dir = state.clone();
    let table = MemBanTable::default();
    let agent = Agent::start(config, table.clone());
    append_failure(&log, "203.0.113.7");
    append_failure(&log, "203.0.113.7");
    let within = Duration::from_secs(5);
    wait_for("a ban with a full state disk", within, || {
        table.ban_on("203.0.113.7".parse().unwrap()).is_some()
    });
    // Space comes back: the next ban is journaled again.
    fs::remove_file(state.join("filler")).unwrap();
    append_failure(&log, "203.0.113.8");
    append_failure(&log, "203.0.113.8");
    wait_for("the ban journaled once space came back", within, || {
        fs::read_to_string(state.join("bans.jsonl"))
            .unwrap_or_default()
            .contains("203.0.113.8")
    });
    agent
        .stop()
        .expect("the agent ran to the end despite the full disk");
}

#[test]
#[ignore = "needs root"]
fn a_missing_bpffs_is_mounted() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("bpf").join("jailer");
    let (mut table, created) = XdpBanTable::open(&pins).expect("mounts bpffs and pins");
    let _mounted = Mounted(&pins);
    assert!(created);
    assert_eq!(statfs(&pins).unwrap().filesystem_type(), BPF_FS_MAGIC);
    table.insert(host("203.0.113.7"), &ban(&[], None)).unwrap();
    assert!(
        XdpBanTable::open_existing(&pins)
            .unwrap()
            .get(host("203.0.113.7"))
            .unwrap()
            .is_some()
    );
    jailer::kernel::detach(&pins).unwrap();
}
