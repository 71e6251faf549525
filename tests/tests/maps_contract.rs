//! The object and the pins agree with `jailer_common::map_names`, and bpftool
//! shows ban fields by name (BTF), which is how operators inspect bans.

use std::{process::Command, time::Duration};

use jailer::{
    admin::{ban_value, write_ban},
    bpf::XdpBanTable,
    ports::PortSet,
};
use jailer_common::map_names;
use jailer_tests::{TempBpffs, require_root};

#[test]
fn object_declares_every_map() {
    require_root!("object_declares_every_map");
    let ebpf = aya::EbpfLoader::new()
        .load(jailer::bpf::XDP_OBJECT)
        .expect("load object");
    let names: Vec<&str> = ebpf.maps().map(|(n, _)| n).collect();
    for name in map_names::ALL {
        assert!(
            names.contains(&name),
            "{name} missing from the object: {names:?}"
        );
    }
    assert_eq!(
        names.len(),
        map_names::ALL.len(),
        "maps not listed in map_names: {names:?}"
    );
    assert!(
        ebpf.programs()
            .any(|(n, _)| n == jailer_common::PROGRAM_NAME)
    );
}

#[test]
fn pinned_ban_map_dumps_with_field_names() {
    require_root!("pinned_ban_map_dumps_with_field_names");
    let bpffs = TempBpffs::new();
    let (mut table, created) = XdpBanTable::open(&bpffs.pins()).expect("create pinned maps");
    assert!(created);
    for name in map_names::ALL {
        assert!(bpffs.pins().join(name).exists(), "{name} not pinned");
    }
    write_ban(
        &mut table,
        jailer_tests::host("203.0.113.7"),
        ban_value(
            &PortSet::Only(vec![110, 995]),
            Some(Duration::from_secs(3600)),
        ),
    )
    .unwrap();
    // Re-opening finds the same pinned map with the ban in it.
    let again = XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    assert_eq!(jailer::admin::active_bans(&again).unwrap().len(), 1);

    let out = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(bpffs.pins().join(map_names::BANS_V4))
        .output()
        .expect("bpftool installed by `cargo xtask setup`");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bpftool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for field in [
        "\"addr\"",
        "\"expires_ns\"",
        "\"drops\"",
        "\"ports\"",
        "\"flags\"",
    ] {
        assert!(
            text.contains(field),
            "bpftool output lacks {field}:\n{text}"
        );
    }
    assert!(
        text.contains("203") && text.contains("113") && text.contains("995"),
        "{text}"
    );
}
