//! What the tests of brewline on the test cluster share (feature `testing`): the users
//! `scripts/services` made for the secured listeners, and ACLs granted with Kafka's own
//! AclCommand (`scripts/kafka-tool`). Panics, as test support does, when the test servers are
//! not there.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

/// A `TEST_BREWLINE_*` variable of `scripts/services`.
pub fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run these tests through scripts/test"))
}

/// The user and password of the SCRAM user `name`.
pub fn scram_user(name: &str) -> (String, String) {
    env("TEST_BREWLINE_KAFKA_SCRAM_USERS")
        .split_whitespace()
        .filter_map(|u| u.split_once(':'))
        .find(|(u, _)| *u == name)
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .unwrap_or_else(|| panic!("no SCRAM user {name}"))
}

/// Grants ACLs as the cluster's administrator (anonymous, over PLAINTEXT): AclCommand
/// `--add` then `args`.
pub fn grant(args: &[&str]) {
    let out = std::process::Command::new(env("TEST_BREWLINE_KAFKA_TOOL"))
        .args(["org.apache.kafka.tools.AclCommand", "--bootstrap-server"])
        .arg(env("TEST_BREWLINE_BROKERS"))
        .arg("--add")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "AclCommand {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
