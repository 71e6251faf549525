//! A fleet in a box: real nats-server processes (Debian's package: JetStream
//! store in a temp dir, a password user) on the loopback of a "hub" network
//! namespace the test creates, and members — each a jailer agent with its
//! own interface (a veth pair in its own namespaces, XDP attached there),
//! bpffs directory and state_dir. The agents' threads live in the hub, so
//! they reach the servers on 127.0.0.1 and nothing else. Everything is
//! stopped, killed and removed on drop, and every wait is bounded.

mod hub;
mod member;
mod pki;

pub use self::{
    hub::{Hub, NatsServer},
    member::{Member, MemberSetup},
    pki::Pki,
};

pub const USER: &str = "jailer";
pub const PASSWORD: &str = "s3cret";
/// The `n` of every member's [`Pair`](crate::Pair): the same client
/// addresses (`10.77.0.2`, `10.77.0.3`) exist behind every member, so one
/// ban drops the same attacker everywhere.
pub const NET: u8 = 77;
/// The client addresses behind each member.
pub const ATTACKER: &str = "10.77.0.2";
pub const BYSTANDER: &str = "10.77.0.3";
