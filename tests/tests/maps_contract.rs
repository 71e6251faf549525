//! The object and the pins agree with `jailer_common::map_names`, and bpftool
//! shows ban fields by name (BTF), which is how operators inspect bans.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    process::Command,
    time::{Duration, SystemTime},
};

use jailer::{
    ban::{Ban, Target},
    cli::active_bans,
    kernel::{BanTable as _, XdpBanTable},
};
use jailer_common::map_names;
use jailer_tests::{TempBpffs, ban, host, load_bench, require_root, target};

#[test]
#[ignore = "needs root"]
fn object_declares_every_map() {
    require_root();
    let ebpf = aya::EbpfLoader::new()
        .load(jailer::kernel::XDP_OBJECT)
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
#[ignore = "needs root"]
fn pinned_ban_map_dumps_with_field_names() {
    require_root();
    let bpffs = TempBpffs::new();
    let (mut table, created) = XdpBanTable::open(&bpffs.pins()).expect("create pinned maps");
    assert!(created);
    for name in map_names::ALL {
        assert!(bpffs.pins().join(name).exists(), "{name} not pinned");
    }
    table
        .insert(host("203.0.113.7"), &ban(&[110, 995], Some(3600)))
        .unwrap();
    // Re-opening finds the same pinned map with the ban in it.
    let again = XdpBanTable::open_existing(&bpffs.pins()).unwrap();
    assert_eq!(active_bans(&again).unwrap().len(), 1);

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
        "\"ports\"",
        "\"flags\"",
        "\"prefix_len\"",
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
    // One value, read-only for the datapath: no per-CPU copies, no drops.
    assert!(
        !text.contains("\"cpu\"") && !text.contains("\"drops\""),
        "{text}"
    );
    // The drop counts: a DROPS slot per CPU, tag and count by name.
    let out = Command::new("bpftool")
        .args(["map", "lookup", "pinned"])
        .arg(bpffs.pins().join(map_names::DROPS))
        .args(["key", "0", "0", "0", "0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let cpus = aya::util::nr_cpus().unwrap();
    assert_eq!(text.matches("\"cpu\"").count(), cpus, "{text}");
    assert_eq!(text.matches("\"tag\"").count(), cpus, "{text}");
    assert_eq!(text.matches("\"drops\"").count(), cpus, "{text}");
}

#[test]
#[ignore = "needs root"]
fn a_full_ban_map_refuses_new_bans_and_keeps_old_ones() {
    require_root();
    let mut loader = aya::EbpfLoader::new();
    loader.map_max_entries(map_names::BANS_V4, 4);
    let mut ebpf = loader
        .load(jailer::kernel::XDP_OBJECT)
        .expect("load object");
    let table = XdpBanTable::from_ebpf(&mut ebpf).unwrap();
    let config = jailer::config::Config::parse(
        std::path::Path::new("/etc/jailer/jailer.toml"),
        "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"/x\"\nmaxretry = 1\n",
    )
    .unwrap();
    let mut engine = jailer::jail::Engine::new(config.jails, table);
    let now = SystemTime::now();
    let log = jailer::source::SourceId::File("/x".into());
    for i in 1..=6 {
        engine.handle_line(
            &log,
            &[0],
            &format!("vpopmail[1]: vchkpw-pop3: password fail a@b:203.0.113.{i}"),
            None,
            now,
        );
    }
    let (_, stats, _) = &engine.stats()[0];
    assert_eq!(stats.total_banned, 4);
    assert_eq!(stats.ban_errors, 2, "the two that did not fit are counted");
    for i in 1..=4 {
        assert!(
            engine
                .table()
                .get(host(&format!("203.0.113.{i}")))
                .unwrap()
                .is_some(),
            "{i} kept"
        );
    }
    // The error a person sees names the map, its size and the address.
    let err = engine
        .table_mut()
        .insert(host("203.0.113.99"), &ban(&[110], None))
        .unwrap_err();
    let err = jailer::error::Chain(&err).to_string();
    assert!(
        err.contains("BANS_V4 is full (4 entries)") && err.contains("203.0.113.99"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root"]
fn batch_syscalls_write_list_and_delete_many_bans() {
    require_root();
    let mut ebpf = aya::EbpfLoader::new()
        .load(jailer::kernel::XDP_OBJECT)
        .expect("load object");
    let mut table = XdpBanTable::from_ebpf(&mut ebpf).unwrap();
    // 100k IPv4 and 10k IPv6 hosts, two port sets, some permanent, plus a
    // network (tries have no batch calls: written one by one).
    let mut bans: Vec<(Target, Ban)> = (0..100_000u32)
        .map(|i| {
            let ports: &[u16] = if i % 2 == 0 { &[110] } else { &[110, 995] };
            let secs = (i % 3 != 0).then_some(3600 + u64::from(i));
            (
                Target::host(Ipv4Addr::from(0x0a00_0000 | i).into()),
                ban(ports, secs),
            )
        })
        .collect();
    bans.extend((0..10_000u16).map(|i| {
        let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i);
        (Target::host(a.into()), ban(&[143], None))
    }));
    bans.push((target("198.51.100.0/24"), ban(&[], Some(60))));
    assert_eq!(table.insert_many(&bans).unwrap(), bans.len());

    let listed: HashMap<Target, Ban> = table
        .list()
        .unwrap()
        .into_iter()
        .map(|l| (l.target, l.ban))
        .collect();
    assert_eq!(listed.len(), bans.len(), "every ban listed once");
    for (t, b) in &bans {
        let got = &listed[t];
        assert_eq!((&got.ports, got.monitor), (&b.ports, b.monitor), "{t}");
        // Written and read back through the kernel clock: nanosecond drift.
        let (want, have) = (
            b.expiry.remaining(SystemTime::now()),
            got.expiry.remaining(SystemTime::now()),
        );
        match (want, have) {
            (None, None) => {}
            (Some(w), Some(h)) => assert!(
                w.abs_diff(h) < Duration::from_secs(1),
                "{t}: {w:?} vs {h:?}"
            ),
            other => panic!("{t}: expiry {other:?}"),
        }
    }

    // Delete every other one, with absent targets interleaved (skipped).
    let mut doomed: Vec<Target> = bans.iter().step_by(2).map(|(t, _)| *t).collect();
    let present = doomed.len();
    doomed.extend((0..100u32).map(|i| Target::host(Ipv4Addr::from(0x0b00_0000 | i).into())));
    assert_eq!(table.remove_many(&doomed).unwrap(), present);
    assert_eq!(table.list().unwrap().len(), bans.len() - present);

    // A full map: the batch writes what fits and says so, nothing evicted.
    let mut loader = aya::EbpfLoader::new();
    loader.map_max_entries(map_names::BANS_V4, 1000);
    let mut small = loader.load(jailer::kernel::XDP_OBJECT).unwrap();
    let mut table = XdpBanTable::from_ebpf(&mut small).unwrap();
    assert_eq!(table.insert_many(&bans[..1500]).unwrap(), 1000);
    assert_eq!(table.list().unwrap().len(), 1000);
}

#[test]
#[ignore = "needs root"]
fn a_pinned_map_of_an_older_layout_is_made_anew() {
    require_root();
    // BANS_V4 as older jailers pinned it: a plain hash with one 40-byte
    // value holding `drops`, then a per-CPU hash of them (with per-CPU
    // prefix drop counts in NET_DROPS_V4); the bench object has maps of
    // those shapes.
    for old in ["PROBE_HASH4", "PROBE_PCPU4"] {
        let bpffs = TempBpffs::new();
        std::fs::create_dir_all(bpffs.pins()).unwrap();
        let mut bench = load_bench(&[]);
        let map = bench.map_mut(old).unwrap();
        let (aya::maps::Map::HashMap(data) | aya::maps::Map::PerCpuHashMap(data)) = map else {
            panic!("{old}: {map:?}");
        };
        data.pin(bpffs.pins().join(map_names::BANS_V4)).unwrap();
        if old == "PROBE_PCPU4" {
            data.pin(bpffs.pins().join("NET_DROPS_V4")).unwrap();
        }
        drop(bench);
        let (mut table, _) = XdpBanTable::open(&bpffs.pins()).expect("old pin replaced");
        table
            .insert(host("203.0.113.7"), &ban(&[110], Some(3600)))
            .unwrap();
        let pinned = aya::maps::MapData::from_pin(bpffs.pins().join(map_names::BANS_V4)).unwrap();
        let info = pinned.info().unwrap();
        assert_eq!(info.map_type().unwrap(), aya::maps::MapType::Hash, "{old}");
        assert_eq!(
            info.value_size() as usize,
            size_of::<jailer_common::BanValue>()
        );
        assert!(!bpffs.pins().join("NET_DROPS_V4").exists(), "{old}");
        let again = XdpBanTable::open_existing(&bpffs.pins()).unwrap();
        assert_eq!(active_bans(&again).unwrap().len(), 1);
    }
}

#[test]
#[ignore = "needs root"]
fn two_jailers_creating_the_maps_at_once_both_get_them() {
    require_root();
    // `jailer ban` while `jailer run` starts after a reboot: both create
    // and pin the maps; the second to pin one finds the other's pin.
    for _ in 0..10 {
        let bpffs = TempBpffs::new();
        let pins = bpffs.pins();
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let open = || {
                start.wait();
                XdpBanTable::open(&pins).map(drop)
            };
            let (a, b) = (s.spawn(open), s.spawn(open));
            a.join().unwrap().expect("first");
            b.join().unwrap().expect("second");
        });
        for name in map_names::ALL {
            assert!(pins.join(name).exists(), "{name}");
        }
    }
}
