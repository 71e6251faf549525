//! async-nats glue: connect options, connecting with errors that name the
//! server, opening (or creating) the bucket and starting its watch. Each
//! function is one network step the link runs as a future.

use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use async_nats::{
    Client, ConnectErrorKind, ConnectOptions, Event, Subscriber,
    jetstream::{
        self,
        consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, push},
        kv,
    },
};
use tokio::{sync::mpsc, time::timeout};
use tracing::{debug, info};

use super::config::{Credentials, FleetConfig};

/// Timeout of each KV write and JetStream API call.
pub(super) const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of a core publish (it only queues into the client).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// Idle heartbeat of the watch consumer: a consumer lost without a
/// disconnect (its cluster node died) is noticed after twice this.
const WATCH_HEARTBEAT: Duration = Duration::from_secs(1);
/// Timeout of the JetStream API calls that open the bucket and its watch.
/// Short: right after a cluster node dies they go unanswered until the
/// stream has a new leader, and a quick retry then wins over a long wait.
const SETUP_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP connect timeout per server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A dead connection without a TCP reset is noticed after two missed pings.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Messages buffered per subscription before async-nats drops (bounds the
/// failure and heartbeat buffers). The watch has flow control, but a
/// 2.9.10 server still sent more than 16k messages of a 100k replay before
/// stalling: keep room for that.
const SUBSCRIPTION_CAPACITY: usize = 64 * 1024;

/// Why the link cannot connect or use the bucket (shown as
/// [`super::EngineState::Error`]; retried in the background).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("fleet.creds `{}`: {source}", path.display())]
    Creds {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every server refused or failed, each with its reason.
    #[error("{}", join(failures))]
    Connect { failures: Vec<ServerFailure> },
    #[error("{server}: subscribing to `{subject}`: {source}")]
    Subscribe {
        server: String,
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error("{servers}: bucket `{bucket}`: cannot open it: {message}")]
    Open {
        servers: String,
        bucket: String,
        message: String,
    },
    #[error("{servers}: bucket `{bucket}`: cannot open it ({open}) nor create it ({create})")]
    Bucket {
        servers: String,
        bucket: String,
        open: String,
        create: String,
    },
    #[error("{servers}: bucket `{bucket}`: starting the watch: {message}")]
    Watch {
        servers: String,
        bucket: String,
        message: String,
    },
}

/// One server's connection failure.
#[derive(Debug)]
pub struct ServerFailure {
    pub server: String,
    pub reason: String,
}

fn join(failures: &[ServerFailure]) -> String {
    let parts: Vec<String> = failures
        .iter()
        .map(|f| format!("{}: {}", f.server, f.reason))
        .collect();
    parts.join("; ")
}

impl fmt::Display for ServerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.server, self.reason)
    }
}

/// Reconnect delay for async-nats: the first retry at once, then 100 ms
/// doubling up to 2 s, plus up to 25% jitter so a fleet does not reconnect in
/// lockstep. A restarted server is found within ~2 s (the default caps at 4 s
/// and has no jitter).
pub(super) fn reconnect_delay(seed: u64, attempt: usize) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(5);
    let base = Duration::from_millis(100 * 2u64.pow(exp)).min(Duration::from_secs(2));
    let jitter = RandomState::new().hash_one((seed, attempt)) % (base.as_millis() as u64 / 4 + 1);
    base + Duration::from_millis(jitter)
}

/// The connected client and its core subscriptions (async-nats renews them
/// after a reconnect).
pub(super) struct Connected {
    pub client: Client,
    pub server: String,
    pub heartbeats: Subscriber,
    pub failures: Subscriber,
}

/// A bucket being watched.
pub(super) struct Watching {
    pub store: Arc<kv::Store>,
    pub messages: push::Messages,
    /// Messages the replay will deliver (0: empty bucket, nothing will come).
    pub pending: u64,
    pub max_age: Duration,
}

/// Core publish, bounded in time: while the client reconnects its queue
/// does not drain and a publish would wait.
pub(super) async fn publish(
    client: &Client,
    subject: String,
    payload: Vec<u8>,
) -> Result<(), String> {
    match timeout(PUBLISH_TIMEOUT, client.publish(subject, payload.into())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// Connect options for every attempt (a creds file is read each time).
async fn options(
    cfg: &FleetConfig,
    events: mpsc::Sender<Event>,
    seed: u64,
) -> Result<ConnectOptions, LinkError> {
    let mut options =
        match &cfg.credentials {
            Credentials::None => ConnectOptions::new(),
            Credentials::UserPassword { user, password } => {
                ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(token) => ConnectOptions::with_token(token.clone()),
            Credentials::CredsFile(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| LinkError::Creds {
                    path: path.clone(),
                    source,
                })?,
        };
    if let Some(tls) = &cfg.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(options
        .name(format!("jailer fleet {}", cfg.name))
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_INTERVAL)
        .request_timeout(Some(OP_TIMEOUT))
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        // Never give up: the link outlives any outage.
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempt| reconnect_delay(seed, attempt))
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                // The link may have stopped; nothing to tell then.
                let _ = events.send(event).await;
            }
        }))
}

/// Tries each server in turn, so a failure names the server it came from
/// (async-nats's error does not), then hands the client all of them for its
/// own reconnects.
pub(super) async fn connect(
    cfg: Arc<FleetConfig>,
    events: mpsc::Sender<Event>,
    seed: u64,
) -> Result<Connected, LinkError> {
    let mut failures = Vec::new();
    for url in &cfg.servers {
        let options = options(&cfg, events.clone(), seed).await?;
        match options.connect(url.as_str()).await {
            Ok(client) => {
                if cfg.servers.len() > 1
                    && let Err(e) = client.set_server_pool(cfg.servers.as_slice()).await
                {
                    debug!("fleet: server pool not set: {e}");
                }
                let heartbeats = subscribe(&client, url, format!("{}.hb.*", cfg.bucket)).await?;
                let failures = subscribe(&client, url, format!("{}.fail.*", cfg.bucket)).await?;
                return Ok(Connected {
                    server: server_name(&client),
                    client,
                    heartbeats,
                    failures,
                });
            }
            Err(e) => failures.push(ServerFailure {
                server: url.clone(),
                reason: describe(&e, &cfg),
            }),
        }
    }
    Err(LinkError::Connect { failures })
}

async fn subscribe(
    client: &Client,
    server: &str,
    subject: String,
) -> Result<Subscriber, LinkError> {
    client
        .subscribe(subject.clone())
        .await
        .map_err(|source| LinkError::Subscribe {
            server: server.to_owned(),
            subject,
            source,
        })
}

/// `n1 (10.0.0.1:4222)`: the server's name and the address it gave.
pub(super) fn server_name(client: &Client) -> String {
    let info = client.server_info();
    format!("{} ({}:{})", info.server_name, info.host, info.port)
}

/// A connect error in words an operator can act on.
fn describe(error: &async_nats::ConnectError, cfg: &FleetConfig) -> String {
    let who = match &cfg.credentials {
        Credentials::None => "no credentials given".to_owned(),
        Credentials::UserPassword { user, .. } => format!("user `{user}`"),
        Credentials::Token(_) => "token".to_owned(),
        Credentials::CredsFile(path) => format!("creds `{}`", path.display()),
    };
    match error.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            format!("authorization violation: the server refused the credentials ({who})")
        }
        _ => error.to_string(),
    }
}

/// Whether opening the bucket failed because its stream does not exist.
fn stream_not_found(error: &jetstream::context::KeyValueError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::context::GetStreamError>())
        .is_some_and(|e| {
            matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
        })
}

/// Opens (or creates) the bucket and starts the replaying watch.
pub(super) async fn setup(client: Client, cfg: Arc<FleetConfig>) -> Result<Watching, LinkError> {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(SETUP_TIMEOUT);
    let bucket = &cfg.bucket;
    let store = match js.get_key_value(bucket).await {
        Ok(store) => store,
        // Timeouts (no JetStream leader yet, a cluster electing one): fail
        // fast, the link retries; creating would time out the same way.
        Err(open) if !stream_not_found(&open) => {
            return Err(LinkError::Open {
                servers: cfg.servers_text(),
                bucket: bucket.clone(),
                message: open.to_string(),
            });
        }
        Err(open) => {
            // `create_key_value` first asks for the account info, which
            // async-nats 0.51 cannot parse from a 2.9 server (fields it
            // requires are missing), so create the bucket's stream as
            // `create_key_value` would, then open it as a bucket.
            let config = jetstream::stream::Config {
                name: format!("KV_{bucket}"),
                description: Some("jailer fleet bans".to_owned()),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age: cfg.max_age,
                storage: jetstream::stream::StorageType::File,
                num_replicas: cfg.replicas,
                discard: jetstream::stream::DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                ..Default::default()
            };
            // Creating fails when another member created it meanwhile:
            // opening it again is what counts.
            let created = js.create_stream(config).await;
            if created.is_ok() {
                info!(bucket = %bucket, replicas = cfg.replicas, "fleet: created the bucket");
            }
            js.get_key_value(bucket)
                .await
                .map_err(|again| LinkError::Bucket {
                    servers: cfg.servers_text(),
                    bucket: bucket.clone(),
                    open: open.to_string(),
                    create: created
                        .err()
                        .map_or_else(|| again.to_string(), |e| e.to_string()),
                })?
        }
    };
    let max_age = store.stream.cached_info().config.max_age;
    let watch_error = |message: String| LinkError::Watch {
        servers: cfg.servers_text(),
        bucket: bucket.clone(),
        message,
    };
    // What `Store::watch_with_history` sets up, but keeping the consumer's
    // `num_pending` (with an empty bucket no message ever arrives) and with
    // a short idle heartbeat (see the link's module comment).
    let consumer = store
        .stream
        .create_consumer(push::Config {
            deliver_subject: client.new_inbox(),
            description: Some(format!("jailer fleet watch ({})", cfg.name)),
            filter_subject: format!("$KV.{bucket}.>"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ack_policy: AckPolicy::None,
            max_deliver: 1,
            replay_policy: ReplayPolicy::Instant,
            flow_control: true,
            idle_heartbeat: WATCH_HEARTBEAT,
            memory_storage: true,
            num_replicas: 1,
            // The server drops it this long after the link lets go.
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| watch_error(e.to_string()))?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| watch_error(e.to_string()))?;
    Ok(Watching {
        store: Arc::new(store),
        messages,
        pending,
        max_age,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_are_short_and_capped() {
        assert_eq!(reconnect_delay(1, 0), Duration::ZERO);
        assert_eq!(reconnect_delay(1, 1), Duration::ZERO);
        let d2 = reconnect_delay(1, 2);
        assert!(d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(125));
        for attempt in 3..1000 {
            let d = reconnect_delay(7, attempt);
            assert!(d <= Duration::from_millis(2500), "{attempt}: {d:?}");
        }
        assert!(reconnect_delay(7, usize::MAX) >= Duration::from_secs(2));
    }

    #[test]
    fn errors_name_the_servers() {
        let e = LinkError::Connect {
            failures: vec![
                ServerFailure {
                    server: "nats://10.0.0.1:4222".into(),
                    reason: "authorization violation".into(),
                },
                ServerFailure {
                    server: "nats://10.0.0.2:4222".into(),
                    reason: "IO error: Connection refused".into(),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "nats://10.0.0.1:4222: authorization violation; nats://10.0.0.2:4222: IO error: Connection refused"
        );
    }
}
