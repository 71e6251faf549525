//! Resource limits, as root: a full disk under `state_dir` and a missing
//! bpffs. The agent keeps protecting; what it cannot do, it says.

use std::{fs, io::Write, path::Path, thread, time::Duration};

use jailer::{
    bpf::{BanTable, MemBanTable, XdpBanTable},
    config::Config,
};
use jailer_tests::{append_failure, host, require_root};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use tokio::sync::oneshot;

struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = umount2(self.0, MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_state_disk_does_not_stop_bans() {
    require_root!("a_full_state_disk_does_not_stop_bans");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    mount(
        Some("tmpfs"),
        &state,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=64k"),
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
    let (stop, stopped) = oneshot::channel::<()>();
    let agent = {
        let table = table.clone();
        thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(jailer::run_agent(&config, table, async {
                let _ = stopped.await;
            }))
        })
    };
    thread::sleep(Duration::from_millis(300));
    append_failure(&log, "203.0.113.7");
    append_failure(&log, "203.0.113.7");
    let mut waited = 0;
    while table.ban_on("203.0.113.7".parse().unwrap()).is_none() {
        assert!(waited < 250, "no ban with a full state disk");
        thread::sleep(Duration::from_millis(20));
        waited += 1;
    }
    // Space comes back: the next ban is journaled again.
    fs::remove_file(state.join("filler")).unwrap();
    append_failure(&log, "203.0.113.8");
    append_failure(&log, "203.0.113.8");
    waited = 0;
    while !fs::read_to_string(state.join("bans.jsonl"))
        .unwrap_or_default()
        .contains("203.0.113.8")
    {
        assert!(waited < 250, "ban not journaled once space came back");
        thread::sleep(Duration::from_millis(20));
        waited += 1;
    }
    let _ = stop.send(());
    agent
        .join()
        .unwrap()
        .expect("the agent ran to the end despite the full disk");
}

#[test]
fn a_missing_bpffs_is_mounted() {
    require_root!("a_missing_bpffs_is_mounted");
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("bpf").join("jailer");
    let (mut table, created) = XdpBanTable::open(&pins).expect("mounts bpffs and pins");
    let _mounted = Mounted(&pins);
    assert!(created);
    assert_eq!(statfs(&pins).unwrap().filesystem_type(), BPF_FS_MAGIC);
    table
        .insert(
            host("203.0.113.7"),
            jailer::admin::ban_value(&jailer::ports::PortSet::All, None),
        )
        .unwrap();
    assert!(
        XdpBanTable::open_existing(&pins)
            .unwrap()
            .get(host("203.0.113.7"))
            .unwrap()
            .is_some()
    );
    jailer::bpf::detach(&pins).unwrap();
}
