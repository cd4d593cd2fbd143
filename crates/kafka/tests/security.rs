//! brewline against the test cluster's secured listeners (`scripts/services`): SASL_SSL with
//! SCRAM and PLAIN users, mutual TLS, and KRaft's StandardAuthorizer with ACLs granted by
//! Kafka's own AclCommand. A principal does what its ACLs allow and is refused the rest with a
//! message naming the topic; a wrong password, an untrusted certificate, no client
//! certificate or a plaintext client on a TLS port each end with a message that says what to
//! set. Needs `scripts/test`'s servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use brewline_kafka::testing::{env, grant, scram_user};
use brewline_kafka::{
    preflight, KafkaConfig, KafkaConsumer, KafkaLog, KafkaProducer, KafkaSecurity, SaslMechanism,
    SecurityProtocol,
};
use brewline_ports::{Consumer, EventLog, Producer, Record, Subscription};

/// The cluster as its anonymous super user, over PLAINTEXT: makes topics and grants.
fn admin() -> KafkaLog {
    KafkaLog::new(KafkaConfig {
        brokers: env("TEST_BREWLINE_BROKERS"),
        ..KafkaConfig::default()
    })
}

fn tls(file: &str) -> PathBuf {
    PathBuf::from(env("TEST_BREWLINE_TLS")).join(file)
}

/// `user` with `password` over SASL_SSL, trusting the test CA.
fn sasl(user: &str, password: &str, mechanism: SaslMechanism) -> KafkaConfig {
    KafkaConfig {
        brokers: env("TEST_BREWLINE_KAFKA_SASL_SSL"),
        security: KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: mechanism,
            username: Some(user.into()),
            password: Some(password.into()),
            ca: Some(tls("ca.pem")),
            ..KafkaSecurity::default()
        },
        ..KafkaConfig::default()
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}", brewline_ports::now_us())
}

fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::keyed(format!("k{i}"), Some(b"v".to_vec())))
        .collect()
}

/// Reads `topic` as a member of `group` until `n` records came, or the first error.
async fn read(
    config: &KafkaConfig,
    topic: &str,
    group: &str,
    n: usize,
) -> brewline_ports::Result<usize> {
    let mut c = KafkaConsumer::new(
        config,
        Subscription {
            topics: vec![topic.into()],
            group: Some(group.into()),
            from: Vec::new(),
        },
    )
    .await?;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n && Instant::now() < deadline {
        got.extend(c.poll(100, Duration::from_millis(500)).await?);
    }
    c.commit(&brewline_ports::next_offsets(&got)).await?;
    Ok(got.len())
}

#[tokio::test]
#[ignore = "needs the Kafka cluster: run scripts/test"]
async fn a_scram_user_over_tls_does_what_its_acls_allow_and_is_refused_the_rest_by_name() {
    let (input, output, group) = (unique("acl-in"), unique("acl-out"), unique("acl-g"));
    let admin = admin();
    admin.create_topic(&input, 1).await.unwrap();
    admin.create_topic(&output, 1).await.unwrap();
    admin
        .producer()
        .unwrap()
        .send(&input, records(3))
        .await
        .unwrap();
    let (user, password) = scram_user("brewline-recs");
    let principal = format!("User:{user}");
    grant(&[
        "--allow-principal",
        &principal,
        "--operation",
        "Read",
        "--topic",
        &input,
        "--group",
        &group,
    ]);
    grant(&[
        "--allow-principal",
        &principal,
        "--operation",
        "Write",
        "--topic",
        &output,
    ]);

    for mechanism in [SaslMechanism::ScramSha512, SaslMechanism::ScramSha256] {
        let config = sasl(&user, &password, mechanism);
        assert_eq!(preflight(&config).await.unwrap(), 3, "{mechanism:?}");
        // What the ACLs allow: write the output, read the input as the group, commit.
        KafkaProducer::new(&config)
            .unwrap()
            .send(&output, records(2))
            .await
            .unwrap();
        if mechanism == SaslMechanism::ScramSha512 {
            assert_eq!(read(&config, &input, &group, 3).await.unwrap(), 3);
        }
    }
    let config = sasl(&user, &password, SaslMechanism::ScramSha512);
    // A topic it may write but not create is there to use; one that is not, it may not make.
    let as_recs = KafkaLog::new(config.clone());
    as_recs.create_topic(&output, 1).await.unwrap();
    let missing = unique("acl-missing");
    let e = as_recs.create_topic(&missing, 1).await.unwrap_err();
    assert!(
        e.to_string().contains(&missing) && e.to_string().contains("grant CREATE"),
        "{e}"
    );
    // What they do not: writing the input, reading the output.
    let e = KafkaProducer::new(&config)
        .unwrap()
        .send(&input, records(1))
        .await
        .unwrap_err();
    assert!(!e.retryable, "{e}");
    assert!(
        e.to_string().contains(&input) && e.to_string().contains("needs an ACL on the topic"),
        "{e}"
    );
    let e = read(&config, &output, &group, 1).await.unwrap_err();
    assert!(
        e.to_string().contains(&output) && e.to_string().contains("ACL"),
        "{e}"
    );
    // Nor another group.
    let e = read(&config, &input, &unique("other-g"), 1)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("ACL allowing READ on the consumer group"),
        "{e}"
    );

    // The same rights for the PLAIN user, who has none: refused.
    let plain = env("TEST_BREWLINE_KAFKA_PLAIN_USER");
    let (plain_user, plain_password) = plain.split_once(':').unwrap();
    let config = sasl(plain_user, plain_password, SaslMechanism::Plain);
    assert_eq!(preflight(&config).await.unwrap(), 3, "PLAIN logs in");
    let e = KafkaProducer::new(&config)
        .unwrap()
        .send(&output, records(1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&output), "{e}");
}

#[tokio::test]
#[ignore = "needs the Kafka cluster: run scripts/test"]
async fn a_wrong_password_an_untrusted_certificate_or_plaintext_on_a_tls_port_says_what_to_set() {
    let (user, password) = scram_user("brewline-nobody");
    let wrong = sasl(
        &user,
        &format!("{password}-not"),
        SaslMechanism::ScramSha512,
    );
    let e = preflight(&wrong).await.unwrap_err();
    assert!(!e.retryable, "{e}");
    assert!(
        e.to_string().contains("refused the login")
            && e.to_string().contains("BREWLINE_KAFKA__SECURITY__PASSWORD"),
        "{e}"
    );
    assert!(
        !e.to_string().contains(&password),
        "no password in messages: {e}"
    );

    let mut untrusted = sasl(&user, &password, SaslMechanism::ScramSha512);
    untrusted.security.ca = None;
    let e = preflight(&untrusted).await.unwrap_err();
    assert!(e.to_string().contains("kafka.security.ca"), "{e}");

    let plaintext = KafkaConfig {
        brokers: env("TEST_BREWLINE_KAFKA_SASL_SSL"),
        ..KafkaConfig::default()
    };
    let e = preflight(&plaintext).await.unwrap_err();
    assert!(e.to_string().contains("kafka.security.protocol"), "{e}");
}

#[tokio::test]
#[ignore = "needs the Kafka cluster: run scripts/test"]
async fn mutual_tls_knows_the_client_by_its_certificate() {
    let topic = unique("mtls");
    admin().create_topic(&topic, 1).await.unwrap();
    grant(&[
        "--allow-principal",
        "User:brewline-client",
        "--operation",
        "Write",
        "--topic",
        &topic,
    ]);
    let mut config = KafkaConfig {
        brokers: env("TEST_BREWLINE_KAFKA_SSL"),
        security: KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            ca: Some(tls("ca.pem")),
            certificate: Some(tls("client.pem")),
            key: Some(tls("client.key")),
            ..KafkaSecurity::default()
        },
        ..KafkaConfig::default()
    };
    KafkaProducer::new(&config)
        .unwrap()
        .send(&topic, records(2))
        .await
        .unwrap();
    config.security.certificate = None;
    config.security.key = None;
    let e = preflight(&config).await.unwrap_err();
    assert!(
        e.to_string().contains("TLS handshake failed"),
        "without a certificate: {e}"
    );
}
