//! Peers for traffic tests: a line server, a POP3 server that logs like
//! vchkpw, and clients bound to a chosen source address.

use std::{
    fs::OpenOptions,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    thread,
    time::Duration,
};

use crate::NetNs;

/// A TCP server in the current namespace answering `+OK` to every line.
pub fn serve(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).expect("bind");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut s = stream;
                let _ = s.write_all(b"+OK ready\r\n");
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(b"+OK\r\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Connects from `src` to `dst` within `timeout`; returns the stream.
pub fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    connect_with(src, dst, timeout, timeout)
}

/// Connects from `src` to `dst`, giving up after `connect`, and reads the
/// greeting; the stream then waits up to `reply` for each answer.
pub fn connect_with(
    src: IpAddr,
    dst: SocketAddr,
    connect: Duration,
    reply: Duration,
) -> std::io::Result<TcpStream> {
    let domain = if dst.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(src, 0).into())?;
    sock.connect_timeout(&dst.into(), connect)?;
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(reply))?;
    let mut greeting = [0u8; 64];
    let n = (&stream).read(&mut greeting)?;
    if n == 0 {
        return Err(std::io::Error::other("closed before greeting"));
    }
    Ok(stream)
}

/// Sends a line and waits for the reply.
pub fn exchange(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(b"NOOP\r\n")?;
    let mut buf = [0u8; 64];
    match stream.read(&mut buf)? {
        0 => Err(std::io::Error::other("closed")),
        _ => Ok(()),
    }
}

/// A POP3 server that accepts `PASS secret` and logs every other password
/// as vchkpw does, with the client's address at the end of the line.
pub fn pop3_server(addr: SocketAddr, log: PathBuf) {
    let listener = TcpListener::bind(addr).expect("bind 110");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = log.clone();
            thread::spawn(move || {
                let peer = stream
                    .peer_addr()
                    .map(|a| a.ip())
                    .unwrap_or(IpAddr::from([0, 0, 0, 0]));
                let peer = match peer {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    v4 => v4,
                };
                let mut out = stream.try_clone().unwrap();
                let _ = out.write_all(b"+OK POP3 ready\r\n");
                let mut user = String::new();
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let line = line.trim_end().to_owned();
                    if let Some(u) = line.strip_prefix("USER ") {
                        user = u.to_owned();
                        let _ = out.write_all(b"+OK\r\n");
                    } else if let Some(p) = line.strip_prefix("PASS ") {
                        let stamp = chrono::Local::now().format("%b %e %H:%M:%S");
                        let (reply, msg) = if p == "secret" {
                            ("+OK logged in\r\n", format!("login success {user}:{peer}"))
                        } else {
                            (
                                "-ERR authorization failed\r\n",
                                format!("password fail {user}:{peer}"),
                            )
                        };
                        let mut f = OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log)
                            .unwrap();
                        writeln!(f, "{stamp} mail vpopmail[4242]: vchkpw-pop3: {msg}").unwrap();
                        let _ = out.write_all(reply.as_bytes());
                    } else if line == "QUIT" {
                        let _ = out.write_all(b"+OK bye\r\n");
                        break;
                    }
                }
            });
        }
    });
}

/// Logs in from `src`; `Ok(true)` when the password was accepted.
pub fn login(client: &NetNs, src: &str, dst: &str, pass: &str) -> std::io::Result<bool> {
    pop3_login(
        client,
        src.parse().unwrap(),
        dst.parse().unwrap(),
        "bob@example.com",
        pass,
    )
}

/// A POP3 login (USER, PASS, QUIT) from `src` in `client`: `Ok(true)` when
/// the password was accepted, `Ok(false)` on `-ERR`; an error when no
/// connection was made within 700 ms (a dropped SYN times out).
pub fn pop3_login(
    client: &NetNs,
    src: IpAddr,
    dst: SocketAddr,
    user: &str,
    pass: &str,
) -> std::io::Result<bool> {
    let (user, pass) = (user.to_owned(), pass.to_owned());
    client.run(move || {
        // Replies may take a while: dovecot answers failures every 0.5 s.
        let stream = connect_with(src, dst, Duration::from_millis(700), Duration::from_secs(5))?;
        let mut w = stream.try_clone()?;
        let mut r = BufReader::new(stream);
        let mut reply = String::new();
        w.write_all(format!("USER {user}\r\n").as_bytes())?;
        r.read_line(&mut reply)?;
        reply.clear();
        w.write_all(format!("PASS {pass}\r\n").as_bytes())?;
        r.read_line(&mut reply)?;
        // Its answer is not awaited: a ban set on the failure just logged
        // drops the QUIT itself.
        w.write_all(b"QUIT\r\n")?;
        Ok(reply.starts_with("+OK"))
    })
}
