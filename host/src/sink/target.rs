//! Where a sink forwards to, parsed from its URL.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The port of `kinesis+https://` URLs that name none.
const HTTPS_PORT: u16 = 443;

/// A sink's upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `nats://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]/SUBJECT-PREFIX`: shard
    /// N goes to subject `SUBJECT-PREFIX.N`, stored by whichever JetStream
    /// stream captures it. `nats+tls://…` requires TLS.
    Nats {
        /// The server list as the client takes it (`nats://…` or
        /// `tls://…` each).
        servers: Vec<String>,
        subject_prefix: String,
        tls: bool,
    },
    /// `kinesis://HOST:PORT/STREAM[?region=REGION]`: a Kinesis Data
    /// Streams API over plain HTTP (another Weir box, an emulator, a local
    /// proxy); `kinesis+https://HOST[:PORT]/STREAM…` over TLS (AWS, port
    /// 443 unless given).
    Kinesis(KinesisTarget),
    /// `kafka://HOST:PORT[,HOST:PORT…]/TOPIC`: shard N goes to partition
    /// N mod the topic's partition count. `kafka+tls://…` over TLS (to
    /// every broker the cluster advertises).
    Kafka {
        brokers: Vec<String>,
        topic: String,
        tls: bool,
    },
}

/// A Kinesis Data Streams API endpoint and stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisTarget {
    /// `HOST[:PORT]` as the URL gives it: the signed `host` header.
    pub authority: String,
    /// The port to connect to (443 for `kinesis+https://` without one).
    pub port: u16,
    pub stream: String,
    pub region: String,
    pub tls: bool,
}

impl KinesisTarget {
    /// Whether this upstream is the Kinesis listener at `listener` (this
    /// box's own API, plain or TLS), as far as the URL shows without
    /// resolving names: the listener's own address (`localhost` taken as
    /// 127.0.0.1) and port, or a loopback address on its port when it
    /// listens on every address.
    pub fn is_listener(&self, listener: SocketAddr) -> bool {
        if self.port != listener.port() {
            return false;
        }
        let ip = match crate::aws::client::host_of(&self.authority) {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            host => match host.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => return false,
            },
        };
        let local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified();
        ip == listener.ip() || (local(ip) && listener.ip().is_unspecified())
    }
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("sink URL {url:?} has no scheme: expected nats://HOST:PORT/SUBJECT-PREFIX")
        })?;
        match scheme {
            "nats" | "nats+tls" => {
                let tls = scheme == "nats+tls";
                let (hosts, prefix) = rest.split_once('/').ok_or_else(|| {
                    format!(
                        "sink URL {} names no subject prefix: expected {scheme}://HOST:PORT/SUBJECT-PREFIX",
                        Self::redacted(url)
                    )
                })?;
                validate_subject_prefix(prefix)?;
                let (credentials, hosts) = match hosts.rsplit_once('@') {
                    Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
                    None => (String::new(), hosts),
                };
                if hosts.is_empty() {
                    return Err("a nats:// sink URL needs at least one HOST:PORT".into());
                }
                let client_scheme = if tls { "tls" } else { "nats" };
                let servers = hosts
                    .split(',')
                    .map(|host| format!("{client_scheme}://{credentials}{host}"))
                    .collect();
                Ok(Self::Nats {
                    servers,
                    subject_prefix: prefix.to_owned(),
                    tls,
                })
            }
            "kinesis" | "kinesis+https" => {
                let tls = scheme == "kinesis+https";
                let (host, rest) = rest.split_once('/').ok_or_else(|| {
                    format!("sink URL {url} names no stream: expected {scheme}://HOST:PORT/STREAM")
                })?;
                let (stream, query) = rest.split_once('?').unwrap_or((rest, ""));
                let mut region = "us-east-1".to_owned();
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    match pair.split_once('=') {
                        Some(("region", value)) if !value.is_empty() => region = value.to_owned(),
                        _ => {
                            return Err(format!(
                                "unknown kinesis:// URL option {pair:?} (only region=REGION)"
                            ));
                        }
                    }
                }
                let needs_host_port = || {
                    format!(
                        "{scheme}:// needs HOST:PORT, not {host:?} (credentials go in --credentials-file)"
                    )
                };
                if host.is_empty() || host.contains('@') {
                    return Err(needs_host_port());
                }
                // `[V6]` alone has colons but no port.
                let port = match host.rsplit_once(':') {
                    Some((_, port)) if !port.contains(']') => port.parse().map_err(|_| {
                        format!("{scheme}:// URL port {port:?} is not a port number")
                    })?,
                    _ if tls => HTTPS_PORT,
                    _ => return Err(needs_host_port()),
                };
                if stream.is_empty()
                    || !stream
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                {
                    return Err(format!(
                        "Kinesis stream name {stream:?} must be 1 or more of [A-Za-z0-9_.-]"
                    ));
                }
                Ok(Self::Kinesis(KinesisTarget {
                    authority: host.to_owned(),
                    port,
                    stream: stream.to_owned(),
                    region,
                    tls,
                }))
            }
            "kafka" | "kafka+tls" => {
                let (hosts, topic) = rest.split_once('/').ok_or_else(|| {
                    format!("sink URL {url} names no topic: expected {scheme}://HOST:PORT/TOPIC")
                })?;
                if topic.is_empty()
                    || topic.len() > 249
                    || !topic
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                {
                    return Err(format!(
                        "Kafka topic {topic:?} must be 1 to 249 of [A-Za-z0-9_.-]"
                    ));
                }
                let brokers: Vec<String> = hosts
                    .split(',')
                    .filter(|host| !host.is_empty())
                    .map(str::to_owned)
                    .collect();
                if brokers.is_empty() || brokers.iter().any(|b| !b.contains(':') || b.contains('@'))
                {
                    return Err(format!(
                        "{scheme}:// needs HOST:PORT[,HOST:PORT…], not {hosts:?}"
                    ));
                }
                Ok(Self::Kafka {
                    brokers,
                    topic: topic.to_owned(),
                    tls: scheme == "kafka+tls",
                })
            }
            other => Err(format!(
                "sink URL scheme {other:?} is not supported: use nats://HOST:PORT/SUBJECT-PREFIX \
                 (nats+tls:// for TLS), \
                 kinesis://HOST:PORT/STREAM, kinesis+https://HOST/STREAM or kafka://HOST:PORT/TOPIC \
                 (kafka+tls:// for TLS)"
            )),
        }
    }

    /// Whether the upstream is reached over TLS.
    pub fn uses_tls(&self) -> bool {
        matches!(
            self,
            Self::Nats { tls: true, .. }
                | Self::Kinesis(KinesisTarget { tls: true, .. })
                | Self::Kafka { tls: true, .. }
        )
    }

    /// `url` with any password replaced by `***`, for showing back.
    pub fn redacted(url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_owned();
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                let hidden = if userinfo.contains(':') {
                    format!("{user}:***")
                } else {
                    // A lone token is a secret too.
                    "***".to_owned()
                };
                format!("{scheme}://{hidden}@{hosts}{path}")
            }
            None => url.to_owned(),
        }
    }
}

/// NATS subject tokens, without wildcards: the prefix is published to, not
/// subscribed to.
fn validate_subject_prefix(prefix: &str) -> Result<(), String> {
    let valid_token = |token: &str| {
        !token.is_empty()
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if prefix.split('.').all(valid_token) {
        Ok(())
    } else {
        Err(format!(
            "subject prefix {prefix:?} must be dot-separated tokens of letters, digits, '_' and '-' (no wildcards)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kinesis_url_is_known_as_the_boxs_own_listener_by_address_and_port() {
        let kinesis = |url: &str| match Target::parse(url).expect("valid") {
            Target::Kinesis(target) => target,
            other => panic!("{other:?}"),
        };
        let on = |addr: &str| addr.parse::<SocketAddr>().expect("addr");
        let own = on("127.0.0.1:4567");
        assert!(kinesis("kinesis://127.0.0.1:4567/s").is_listener(own));
        assert!(kinesis("kinesis://localhost:4567/s").is_listener(own));
        assert!(kinesis("kinesis+https://127.0.0.1:4567/s").is_listener(own));
        assert!(!kinesis("kinesis://127.0.0.1:4568/s").is_listener(own));
        assert!(!kinesis("kinesis://10.0.0.5:4567/s").is_listener(own));
        assert!(!kinesis("kinesis://[::1]:4567/s").is_listener(own));
        let everywhere = on("0.0.0.0:4567");
        assert!(kinesis("kinesis://127.0.0.1:4567/s").is_listener(everywhere));
        assert!(kinesis("kinesis://[::1]:4567/s").is_listener(everywhere));
        assert!(kinesis("kinesis://10.0.0.5:4567/s").is_listener(on("10.0.0.5:4567")));
    }

    #[test]
    fn nats_urls_parse_into_servers_and_a_subject_prefix() {
        let target = Target::parse("nats://a:1,b:2/edge.box-1").expect("valid");
        assert_eq!(
            target,
            Target::Nats {
                servers: vec!["nats://a:1".into(), "nats://b:2".into()],
                subject_prefix: "edge.box-1".into(),
                tls: false,
            }
        );
        let over_tls = Target::parse("nats+tls://u:p@a:1,b:2/x").expect("valid");
        assert!(over_tls.uses_tls());
        assert!(
            matches!(over_tls, Target::Nats { servers, .. } if servers == ["tls://u:p@a:1", "tls://u:p@b:2"])
        );
        let with_user = Target::parse("nats://u:p@a:1/x").expect("valid");
        assert!(matches!(with_user, Target::Nats { servers, .. } if servers == ["nats://u:p@a:1"]));
        assert_eq!(
            Target::parse("kafka://a:9092,b:9092/events").expect("valid"),
            Target::Kafka {
                brokers: vec!["a:9092".into(), "b:9092".into()],
                topic: "events".into(),
                tls: false,
            }
        );
        let kafka_tls = Target::parse("kafka+tls://a:9093/events").expect("valid");
        assert!(kafka_tls.uses_tls());
        assert!(matches!(kafka_tls, Target::Kafka { brokers, .. } if brokers == ["a:9093"]));
        assert_eq!(
            Target::parse("kinesis://h:4567/central?region=eu-west-1").expect("valid"),
            Target::Kinesis(KinesisTarget {
                authority: "h:4567".into(),
                port: 4567,
                stream: "central".into(),
                region: "eu-west-1".into(),
                tls: false,
            })
        );
        assert_eq!(
            Target::parse(
                "kinesis+https://kinesis.eu-west-1.amazonaws.com/central?region=eu-west-1"
            )
            .expect("valid"),
            Target::Kinesis(KinesisTarget {
                authority: "kinesis.eu-west-1.amazonaws.com".into(),
                port: 443,
                stream: "central".into(),
                region: "eu-west-1".into(),
                tls: true,
            })
        );
        assert!(matches!(
            Target::parse("kinesis+https://[::1]/s"),
            Ok(Target::Kinesis(KinesisTarget { port: 443, .. }))
        ));
        assert!(matches!(
            Target::parse("kinesis+https://[::1]:4567/s"),
            Ok(Target::Kinesis(KinesisTarget { port: 4567, .. }))
        ));
    }

    #[test]
    fn bad_urls_say_what_is_expected() {
        for (url, says) in [
            ("127.0.0.1:4222/x", "no scheme"),
            ("kafkaa://h:1/t", "not supported"),
            ("redis://h:1/t", "kafka://HOST:PORT/TOPIC"),
            ("nats://h:1", "no subject prefix"),
            ("nats://h:1/a.*", "no wildcards"),
            ("nats://h:1/a..b", "dot-separated"),
            ("nats:///a", "at least one HOST:PORT"),
            ("kinesis://h:1", "names no stream"),
            ("kinesis://h/s", "HOST:PORT"),
            ("kinesis://[::1]/s", "HOST:PORT"),
            ("kinesis+https:///s", "HOST:PORT"),
            ("kinesis://h:x/s", "not a port number"),
            ("kinesis://k:s@h:1/s", "--credentials-file"),
            ("kinesis://h:1/s?profile=x", "only region"),
            ("kafka://h:1", "names no topic"),
            ("kafka://h:1/a b", "must be 1 to 249"),
            ("kafka:///t", "HOST:PORT"),
            ("kafka+tls://h/t", "kafka+tls:// needs HOST:PORT"),
        ] {
            let error = Target::parse(url).expect_err(url);
            assert!(error.contains(says), "{url}: {error}");
        }
    }

    #[test]
    fn passwords_never_show_back() {
        assert_eq!(
            Target::redacted("nats://user:secret@h:1/x"),
            "nats://user:***@h:1/x"
        );
        assert_eq!(Target::redacted("nats://token@h:1/x"), "nats://***@h:1/x");
        assert_eq!(Target::redacted("nats://h:1/x"), "nats://h:1/x");
    }
}
