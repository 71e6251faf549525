//! Datapath benchmarks (root): `cargo bench -p jailer-tests --bench datapath`.
//!
//! A. ns/packet through BPF_PROG_TEST_RUN (repeat 1e6, best of 5) for each
//!    verdict path, with 1, 10k and 1M bans in the maps, and the time to load
//!    1M bans.
//! B. Packets/s a banned sender achieves into a veth pair between two test
//!    namespaces, and the softirq CPU per packet, for: no ban, nft set drop,
//!    iptables drop, `ip route add unreachable` (fail2ban's route action),
//!    jailer XDP in generic and in driver mode. One run, same traffic.

use std::{
    fs,
    net::IpAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun, TestRunOptions, Xdp},
};
use ipnet::IpNet;
use jailer::{
    ban::{Ban, Target},
    config::XdpMode,
    kernel::{BanTable, XdpBanTable},
};
use jailer_common::PROGRAM_NAME;
use jailer_tests::{Pair, TempBpffs, ban, host, load_xdp, sh, tcp4};

fn ns_per_packet(ebpf: &Ebpf, frame: &[u8]) -> f64 {
    let prog: &Xdp = ebpf.program(PROGRAM_NAME).unwrap().try_into().unwrap();
    (0..5)
        .map(|_| {
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(frame);
            opts.repeat = 1_000_000;
            prog.test_run(opts).unwrap().duration.as_nanos() as f64
        })
        .fold(f64::MAX, f64::min)
}

fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x08, 0x06]);
    f.extend_from_slice(&[0u8; 28]);
    f
}

fn part_a() {
    println!("A. ns/packet, BPF_PROG_TEST_RUN, repeat 1e6, best of 5, pinned to CPU 0");
    println!(
        "{:<10} {:>9} {:>12} {:>12} {:>12} {:>12}",
        "bans", "non-IP", "TCP to 25", "110 clean", "110 exact", "110 prefix"
    );
    let frames = [
        arp(),
        tcp4([198, 51, 100, 1], 25, 5, 0),
        tcp4([198, 51, 100, 1], 110, 5, 0),
        tcp4([203, 0, 113, 7], 110, 5, 0),
        tcp4([192, 0, 2, 7], 110, 5, 0),
    ];
    for fill in [1u32, 10_000, 1_000_000] {
        let mut ebpf = load_xdp();
        let mut table = XdpBanTable::from_ebpf(&mut ebpf).unwrap();
        let v = ban(&[110], Some(3600));
        table.insert(host("203.0.113.7"), &v).unwrap();
        table.insert("192.0.2.0/24".parse().unwrap(), &v).unwrap();
        // Filler bans in 10.0.0.0/8, exact, 1h each; the trie gets up to 60k
        // /24s in 172.16/12.
        let filler: Vec<(Target, Ban)> = (1..fill)
            .map(|i| (Target::host(IpAddr::V4(((10u32 << 24) | i).into())), v))
            .collect();
        let start = Instant::now();
        assert_eq!(table.insert_many(&filler).unwrap(), filler.len());
        let loaded = start.elapsed();
        for i in 1..fill.min(60_000) {
            let net = IpNet::new(
                IpAddr::V4(((172u32 << 24) | (16 << 16) | (i << 8)).into()),
                24,
            )
            .unwrap();
            table.insert(Target::network(net), &v).unwrap();
        }
        let ns: Vec<String> = frames
            .iter()
            .map(|f| format!("{:.1}", ns_per_packet(&ebpf, f)))
            .collect();
        println!(
            "{:<10} {:>9} {:>12} {:>12} {:>12} {:>12}",
            fill, ns[0], ns[1], ns[2], ns[3], ns[4]
        );
        if fill == 1_000_000 {
            println!(
                "loading 1,000,000 exact bans (BPF_MAP_UPDATE_BATCH, 64k per call): {:.2} s",
                loaded.as_secs_f64()
            );
        }
    }
    println!(
        "(bans expire in 1h, so the boot clock is read; the trie holds min(bans, 60k) /24s besides the exact map; 'non-IP' is an ARP frame)"
    );
    restore_1m();
}

/// Restoring 1M bans after a reboot: journal replay plus batch writes into
/// fresh, empty maps, as the agent does at start.
fn restore_1m() {
    let dir = tempfile::tempdir().unwrap();
    let journal = jailer::state::Journal::new(dir.path());
    let now = std::time::SystemTime::now();
    let at = jailer::time::unix_secs(now);
    let mut text = String::with_capacity(1_000_000 * 100);
    for i in 0..1_000_000u32 {
        let a = std::net::Ipv4Addr::from((10u32 << 24) | i);
        text.push_str(&format!(
            "{{\"op\":\"ban\",\"addr\":\"{a}\",\"jail\":\"vpopmail\",\"ports\":\"110\",\"until\":{},\"at\":{at}}}\n",
            at + 3600
        ));
    }
    fs::write(dir.path().join("bans.jsonl"), text).unwrap();
    let mut ebpf = EbpfLoader::new().load(jailer::kernel::XDP_OBJECT).unwrap();
    let table = XdpBanTable::from_ebpf(&mut ebpf).unwrap();
    let config = jailer::config::Config::parse(
        std::path::Path::new("/etc/jailer/jailer.toml"),
        "[jails.vpopmail]\nfilter = \"vpopmail\"\nlogpath = \"/x\"\n",
    )
    .unwrap();
    let start = Instant::now();
    let replay = journal.replay(now).unwrap();
    let replayed = start.elapsed();
    let mut engine = jailer::jail::Engine::new(config.jails, table);
    let restored = engine
        .restore(jailer::jail::Restoration::prepare(&replay, now, true))
        .unwrap();
    let total = start.elapsed();
    println!(
        "restoring {restored} bans from the journal into empty maps: {:.2} s ({:.2} s replaying the journal, {:.2} s writing the maps)",
        total.as_secs_f64(),
        replayed.as_secs_f64(),
        (total - replayed).as_secs_f64()
    );
}

fn mac(ns: &str, iface: &str) -> [u8; 6] {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", iface])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let m = text
        .split("link/ether ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let b: Vec<u8> = m
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

fn csum(data: &[u8], init: u32) -> u16 {
    let mut sum = init;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from(chunk[0]) << 8
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A valid SYN (both checksums right) from `src` to `dst:110`, source port `sport`.
fn syn(dst_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], sport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(54);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = csum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&110u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&(u32::from(sport) * 7919).to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let c = csum(&pseudo, 0);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

fn softirq_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap();
    let cpu = stat.lines().next().unwrap();
    cpu.split_whitespace().nth(7).unwrap().parse().unwrap()
}

/// Sends `count` SYNs (bounded by `limit` time) through an AF_PACKET socket
/// on `ifindex`; returns (packets sent, elapsed).
fn blast(frames: &[Vec<u8>], ifindex: i32, count: usize, limit: Duration) -> (usize, Duration) {
    // SAFETY: plain socket syscalls on buffers that outlive them.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "AF_PACKET socket");
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex;
        addr.sll_halen = 6;
        let rc = libc::bind(
            fd,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(rc, 0, "bind AF_PACKET");
        const BATCH: usize = 64;
        let mut iovs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
        let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
        let start = Instant::now();
        let mut sent = 0;
        let mut next = 0;
        while sent < count && start.elapsed() < limit {
            iovs.clear();
            msgs.clear();
            for _ in 0..BATCH {
                let f = &frames[next % frames.len()];
                next += 1;
                iovs.push(libc::iovec {
                    iov_base: f.as_ptr() as *mut _,
                    iov_len: f.len(),
                });
            }
            for iov in &mut iovs {
                let mut h: libc::mmsghdr = std::mem::zeroed();
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                msgs.push(h);
            }
            let n = libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0);
            if n > 0 {
                sent += n as usize;
            }
        }
        libc::close(fd);
        (sent, start.elapsed())
    }
}

fn part_b() {
    println!(
        "\nB. banned sender -> veth -> server, TCP SYN to 110, 64-frame sendmmsg batches, 3 s or 3M packets each"
    );
    println!(
        "{:<34} {:>12} {:>10} {:>16}",
        "how the host is banned", "packets/s", "vs no ban", "softirq ns/pkt"
    );
    let mut base = 0.0;
    for how in [
        "no ban",
        "nft set drop (input hook)",
        "iptables drop (INPUT)",
        "ip route add unreachable",
        "jailer XDP, generic mode",
        "jailer XDP, driver mode",
    ] {
        let net = Pair::new(194);
        net.server.run(|| {
            let l = std::net::TcpListener::bind("0.0.0.0:110").unwrap();
            thread::spawn(move || for _ in l.incoming() {});
        });
        let s = net.server.name.clone();
        let mut _bpffs = None;
        match how {
            "nft set drop (input hook)" => {
                let rules = "table inet jb { set banned { type ipv4_addr; elements = { 10.194.0.2 } }\n chain input { type filter hook input priority 0; policy accept\n ip saddr @banned tcp dport 110 drop\n }\n}\n";
                fs::write("/tmp/jailer-bench.nft", rules).unwrap();
                sh(&[
                    "ip",
                    "netns",
                    "exec",
                    &s,
                    "nft",
                    "-f",
                    "/tmp/jailer-bench.nft",
                ]);
            }
            "iptables drop (INPUT)" => sh(&[
                "ip",
                "netns",
                "exec",
                &s,
                "iptables",
                "-A",
                "INPUT",
                "-s",
                "10.194.0.2",
                "-p",
                "tcp",
                "--dport",
                "110",
                "-j",
                "DROP",
            ]),
            "ip route add unreachable" => {
                sh(&["ip", "-n", &s, "route", "add", "unreachable", "10.194.0.2"])
            }
            "jailer XDP, generic mode" | "jailer XDP, driver mode" => {
                let mode = if how.ends_with("generic mode") {
                    XdpMode::Generic
                } else {
                    XdpMode::Driver
                };
                let bpffs = TempBpffs::new();
                let pins = bpffs.pins();
                let iface = net.iface.clone();
                let mut table = net.server.run(move || {
                    jailer::kernel::attach(&pins, &[iface], mode, 1 << 20)
                        .unwrap()
                        .bans
                });
                table
                    .insert(host("10.194.0.2"), &ban(&[110], None))
                    .unwrap();
                _bpffs = Some(bpffs);
            }
            _ => {}
        }
        let dst_mac = mac(&s, &net.iface);
        let peer = net.client.name.clone();
        let out = Command::new("ip")
            .args(["-n", &peer, "-o", "link", "show"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let peer_if = text
            .lines()
            .find(|l| l.contains("vc"))
            .unwrap()
            .split(": ")
            .nth(1)
            .unwrap()
            .split('@')
            .next()
            .unwrap()
            .to_owned();
        let src_mac = mac(&peer, &peer_if);
        let frames: Vec<Vec<u8>> = (0..4096u16)
            .map(|i| {
                syn(
                    dst_mac,
                    src_mac,
                    [10, 194, 0, 2],
                    [10, 194, 0, 1],
                    10_000 + i,
                )
            })
            .collect();
        let (sent, elapsed, ticks) = net.client.run(move || {
            let ifindex = nix::net::if_::if_nametoindex(peer_if.as_str()).unwrap() as i32;
            let _ = blast(&frames, ifindex, 100_000, Duration::from_secs(1)); // warm up
            let t0 = softirq_ticks();
            let (sent, elapsed) = blast(&frames, ifindex, 3_000_000, Duration::from_secs(3));
            (sent, elapsed, softirq_ticks() - t0)
        });
        let pps = sent as f64 / elapsed.as_secs_f64();
        if how == "no ban" {
            base = pps;
        }
        let softirq_ns = ticks as f64 * 1e7 / sent as f64; // USER_HZ 100 -> 10 ms per tick
        println!(
            "{:<34} {:>12.0} {:>9.2}x {:>16.0}",
            how,
            pps,
            pps / base,
            softirq_ns
        );
    }
    let _ = fs::remove_file("/tmp/jailer-bench.nft");
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP datapath bench: needs root");
        return;
    }
    if std::env::args().any(|a| a == "--test") {
        return; // `cargo test --benches` compiles and skips this
    }
    // `-- a` or `-- b` runs one part only.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a == "a" || a == "b")
        .collect();
    if only.is_empty() || only.iter().any(|a| a == "a") {
        let mut cpus = nix::sched::CpuSet::new();
        cpus.set(0).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus).unwrap();
        part_a();
    }
    if only.is_empty() || only.iter().any(|a| a == "b") {
        part_b();
    }
}
