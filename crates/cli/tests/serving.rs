//! `brewline serve` and `demo --serve` as a user runs them, on the embedded engines: the
//! Lambda merge of an old batch view and the speed layer since its watermark equals a batch run
//! over everything, figure for figure; bad parameters get 400 and unknown ids 404.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{free_port, http_get, terminate, Process};

fn brewline(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_brewline"));
    cmd.args(args).env_remove("BREWLINE_CONFIG");
    cmd
}

fn run(args: &[&str]) {
    let out = brewline(args).output().unwrap();
    assert!(
        out.status.success(),
        "brewline {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start(args: &[&str], log: &Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    Process(
        brewline(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = http_get(addr, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `addr` serves figures whose speed view is caught up and resolved.
fn wait_ready(addr: &str, process: &mut Process, log: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            process.0.try_wait().unwrap().is_none(),
            "the server ended: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        if std::net::TcpStream::connect(addr).is_ok() {
            let (status, body) = http_get(addr, "/healthz");
            if status == 200 {
                let health: Value = serde_json::from_str(&body).unwrap();
                let speed = &health["watermark"]["speed"];
                if speed["unresolved"] == 0 && speed["lag"] == 0 {
                    return health;
                }
            }
        }
        assert!(Instant::now() < deadline, "not ready in 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every figure the API serves for `today`, without the watermarks.
fn figures(addr: &str, today: &str) -> Vec<(String, Value)> {
    let paths = [
        "/api/sales/today".to_string(),
        format!("/api/sales/daily?from={today}&to={today}"),
        format!("/api/sales/hourly?date={today}"),
        format!("/api/products/top?date={today}&limit=100"),
        format!("/api/stores/top?date={today}&limit=1000"),
        format!("/api/cities?date={today}"),
        format!("/api/suggestions/stats?from={today}&to={today}"),
        format!("/api/stores/7/sales?from={today}&to={today}"),
    ];
    paths
        .into_iter()
        .map(|p| {
            let mut v = get_json(addr, &p);
            let watermark = v.as_object_mut().unwrap().remove("watermark");
            assert!(watermark.is_some(), "{p} says up to where its parts reach");
            if let Some(o) = v.as_object_mut() {
                // A figure of the last minute is a clock's, not the merge's.
                o.remove("orders_last_minute");
            }
            (p, v)
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn an_old_batch_view_plus_the_speed_layer_equals_a_new_batch_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    // The batch view of run 1, kept aside.
    run(&["demo", "--orders", "3000", "--seed", "21", "--data-dir", d]);
    let old_lake = tmp.path().join("lake-run1");
    copy_dir(&data.join("lake"), &old_lake);

    // More orders, a batch run, then the pipeline goes on while serving, customers taking
    // every suggestion (those of run 1's orders too: lines added to orders of the batch view).
    let addr = format!("127.0.0.1:{}", free_port());
    let demo_log = tmp.path().join("demo.log");
    let mut demo = start(
        &[
            "demo",
            "--orders",
            "500",
            "--seed",
            "21",
            "--data-dir",
            d,
            "--serve",
            &addr,
            "--serve-rate",
            "200",
            "--accept-share",
            "1",
            "--batch-every",
            "1h",
        ],
        &demo_log,
    );
    wait_ready(&addr, &mut demo, &demo_log);
    let first = get_json(&addr, "/api/sales/today");
    let deadline = Instant::now() + Duration::from_secs(60);
    let moved = loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = get_json(&addr, "/api/sales/today");
        if now["revenue"].as_i64() > first["revenue"].as_i64() {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the figures never moved: {first}"
        );
    };
    assert!(moved["watermark"]["speed"]["orders"].as_u64().unwrap() > 0);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        terminate(&mut demo).success(),
        "demo --serve stops cleanly on a signal"
    );

    // A batch run over everything: the reference.
    run(&["batch", "run", "--data-dir", d]);
    let today = brewline_core::calendar::date_of_millis(brewline_ports::now_ms());

    let old_addr = format!("127.0.0.1:{}", free_port());
    let old_log = tmp.path().join("serve-old.log");
    let mut old = start(
        &[
            "serve",
            "--data-dir",
            d,
            "--lake",
            old_lake.to_str().unwrap(),
            "--addr",
            &old_addr,
        ],
        &old_log,
    );
    let health = wait_ready(&old_addr, &mut old, &old_log);
    assert!(health["watermark"]["speed"]["orders"].as_u64().unwrap() > 500);
    let merged = figures(&old_addr, &today);
    let (status, metrics) = http_get(&old_addr, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("brewline_batch_last_success_timestamp_seconds "));
    assert!(
        metrics.contains("brewline_batch_last_run_passed 1"),
        "{metrics}"
    );
    assert!(metrics
        .contains("brewline_serve_requests_total{route=\"/api/sales/today\",status=\"200\"}"));
    old.kill();

    let new_addr = format!("127.0.0.1:{}", free_port());
    let new_log = tmp.path().join("serve-new.log");
    let mut new = start(&["serve", "--data-dir", d, "--addr", &new_addr], &new_log);
    let health = wait_ready(&new_addr, &mut new, &new_log);
    assert_eq!(
        health["watermark"]["speed"]["orders"], 0,
        "run 3 holds every event"
    );
    let batch = figures(&new_addr, &today);

    for ((path, m), (_, b)) in merged.iter().zip(&batch) {
        assert_eq!(m, b, "{path}: run 1 + speed layer vs run 3");
    }
    let today_figures = &batch[0].1;
    assert!(today_figures["orders"].as_i64().unwrap() > 3500);
    assert!(
        today_figures["accepted_suggestions"].as_i64().unwrap() > 0,
        "suggestions were taken"
    );

    // Bad parameters say what to fix; unknown ids and routes are 404.
    for (path, status, says) in [
        ("/api/sales/daily?from=2026-02-30", 400, "not a date"),
        (
            "/api/sales/daily?from=2026-11-25&to=2026-11-01",
            400,
            "is after",
        ),
        (
            "/api/sales/daily?from=2020-01-01&to=2026-01-01",
            400,
            "at most 366",
        ),
        ("/api/products/top?limit=0", 400, "limit"),
        ("/api/sales/today?colour=red", 400, "unknown parameter"),
        ("/api/stores/abc/sales", 400, "not a number"),
        ("/api/stores/0/sales", 404, "no store 0"),
        ("/api/nothing", 404, "no such route"),
    ] {
        let (got, body) = http_get(&new_addr, path);
        assert_eq!(got, status, "{path}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{path}: {body}"
        );
    }
    let (status, page) = http_get(&new_addr, "/");
    assert_eq!(status, 200);
    assert!(page.contains("EventSource(\"/api/live\")"));
    new.kill();
}

/// The serving layer's bounds: a speed view kept to `serve.max_speed_orders` orders (the rest
/// dropped, said by /healthz and the metrics) and at most `serve.max_live_clients` dashboards
/// on the live stream, a place given back when a dashboard goes away.
#[test]
fn the_speed_view_and_the_live_stream_stay_within_their_bounds() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    run(&["demo", "--orders", "300", "--seed", "8", "--data-dir", d]);
    let old_lake = tmp.path().join("lake-run1");
    copy_dir(&data.join("lake"), &old_lake);
    run(&["demo", "--orders", "200", "--seed", "9", "--data-dir", d]);

    let addr = format!("127.0.0.1:{}", free_port());
    let log = tmp.path().join("serve.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut serve = Process(
        brewline(&[
            "serve",
            "--data-dir",
            d,
            "--lake",
            old_lake.to_str().unwrap(),
            "--addr",
            &addr,
        ])
        .env("BREWLINE_SERVE__MAX_SPEED_ORDERS", "50")
        .env("BREWLINE_SERVE__MAX_LIVE_CLIENTS", "1")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap(),
    );
    let health = wait_ready(&addr, &mut serve, &log);
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["reason"]
            .as_str()
            .unwrap()
            .contains("serve.max_speed_orders"),
        "{health}"
    );
    assert_eq!(health["watermark"]["speed"]["orders"], 50);
    let (_, metrics) = http_get(&addr, "/metrics");
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("brewline_serve_speed_dropped "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped > 0.0, "{metrics}");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("the speed view filled up"));

    // One dashboard on the live stream; a second is turned away until the first leaves.
    let mut first = std::net::TcpStream::connect(&addr).unwrap();
    write!(first, "GET /api/live HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut head = [0u8; 64];
    let n = first.read(&mut head).unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    let (status, body) = http_get(&addr, "/api/live");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("serve.max_live_clients"), "{body}");
    let (_, metrics) = http_get(&addr, "/metrics");
    assert!(
        metrics.contains("brewline_serve_live_clients 1"),
        "{metrics}"
    );
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = std::net::TcpStream::connect(&addr).unwrap();
        write!(again, "GET /api/live HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let n = again.read(&mut head).unwrap();
        if String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never given back");
        std::thread::sleep(Duration::from_millis(300));
    }
    serve.kill();
}

/// One HTTP/1.0 exchange of `request` (without the final blank line's `Host`): the status,
/// the head and the body of the answer.
fn exchange(addr: &str, request: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.replace("\n", "\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out).to_string();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

#[test]
fn with_a_token_only_the_health_check_and_the_login_page_answer_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    run(&["demo", "--orders", "100", "--seed", "3", "--data-dir", d]);
    let addr = format!("127.0.0.1:{}", free_port());
    let log = tmp.path().join("serve.log");
    let token = "test-serve-token-7f3a";
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut serve = Process(
        brewline(&["serve", "--data-dir", d, "--addr", &addr])
            .env("BREWLINE_SERVE__TOKEN", token)
            .env("BREWLINE_SERVE__METRICS_ADDR", &metrics_addr)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_ready(&addr, &mut serve, &log);
    let get = |path: &str, extra: &str| {
        exchange(
            &addr,
            &format!("GET {path} HTTP/1.0\nHost: {addr}\n{extra}\n"),
        )
    };

    // Without the token: 401 saying how, and the dashboard sends a browser to log in.
    for path in ["/api/sales/today", "/metrics", "/api/live"] {
        let (status, head, body) = get(path, "");
        assert_eq!(status, 401, "{path}: {head}");
        assert!(head.contains("www-authenticate: Bearer"), "{head}");
        assert!(body.contains("Authorization: Bearer"), "{body}");
    }
    let (status, head, _) = get("/", "");
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /login"), "{head}");
    let (status, _, page) = get("/login", "");
    assert_eq!(status, 200);
    assert!(page.contains("type=\"password\""), "{page}");
    assert_eq!(get("/healthz", "").0, 200, "health checks need no token");
    let wrong = get("/api/sales/today", "Authorization: Bearer nope\n");
    assert_eq!(wrong.0, 401);

    // With it, as a bearer token.
    let bearer = format!("Authorization: Bearer {token}\n");
    let (status, _, body) = get("/api/sales/today", &bearer);
    assert_eq!(status, 200, "{body}");
    let (status, _, metrics) = get("/metrics", &bearer);
    assert_eq!(status, 200);
    assert!(metrics.contains("brewline_serve_requests"), "{metrics}");
    // serve.metrics_addr: /metrics (and /healthz) alone, open, for Prometheus.
    let (status, scraped) = http_get(&metrics_addr, "/metrics");
    assert_eq!(status, 200, "{scraped}");
    assert!(scraped.contains("brewline_serve_requests"), "{scraped}");
    assert_eq!(http_get(&metrics_addr, "/api/sales/today").0, 404);

    // Logging in: a wrong token is refused, the right one sets an HttpOnly session cookie
    // that opens the dashboard and the API.
    let post = |form: &str| {
        exchange(
            &addr,
            &format!(
                "POST /login HTTP/1.0\nHost: {addr}\nContent-Type: application/x-www-form-urlencoded\nContent-Length: {}\n\n{form}",
                form.len()
            ),
        )
    };
    let (status, _, page) = post("token=wrong");
    assert_eq!(status, 401);
    assert!(page.contains("Wrong token"), "{page}");
    let (status, head, _) = post(&format!("token={token}"));
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(token),
        "the cookie is not the token: {cookie}"
    );
    let session = cookie.split(';').next().unwrap();
    let (status, _, page) = get("/", &format!("Cookie: {session}\n"));
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "the dashboard");
    assert_eq!(
        get("/api/dashboard", &format!("Cookie: {session}\n")).0,
        200
    );

    // A body larger than any form is refused before it is read.
    let big = format!("token={}", "x".repeat(64 * 1024));
    assert_eq!(post(&big).0, 413);

    terminate(&mut serve);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains(token),
        "the token is never logged:\n{logged}"
    );
}

/// `curl` trusting the test authority (`-sS`, 5 s at most): whether it succeeded, and what it
/// printed (`-i`: the head too).
fn curl(ca: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .expect("curl is needed by this test");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Over HTTPS with the certificate and key from config (the test authority's): a client that
/// trusts the authority gets answers, behind the token as over HTTP, and a `Secure` session
/// cookie; plain HTTP and a client that does not trust the certificate get none; a
/// certificate without its key is refused at start, saying what to set.
#[test]
#[ignore = "needs the test certificate authority of scripts/services: run scripts/test"]
fn over_https_with_the_certificate_from_config() {
    let tls = std::path::PathBuf::from(brewline_kafka::testing::env("TEST_BREWLINE_TLS"));
    let ca = tls.join("ca.pem");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    run(&["demo", "--orders", "100", "--seed", "3", "--data-dir", d]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = tmp.path().join("serve.log");
    let token = "test-tls-token-51c2";
    let mut serve = Process(
        brewline(&["serve", "--data-dir", d, "--addr", &addr])
            .env("BREWLINE_SERVE__TOKEN", token)
            .env("BREWLINE_SERVE__TLS_CERTIFICATE", tls.join("server.pem"))
            .env("BREWLINE_SERVE__TLS_KEY", tls.join("server.key"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("https://localhost:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let ready = || {
        let (ok, body) = curl(&ca, &[&format!("{base}/healthz")]);
        let health: Value = serde_json::from_str(&body).unwrap_or_default();
        let speed = &health["watermark"]["speed"];
        ok && speed["unresolved"] == 0 && speed["lag"] == 0
    };
    while !ready() {
        assert!(
            serve.0.try_wait().unwrap().is_none(),
            "the server ended: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "no HTTPS answer in 120 s");
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = |args: &[&str]| {
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        all.extend(args);
        curl(&ca, &all).1
    };
    let today = format!("{base}/api/sales/today");
    assert_eq!(
        status(&[&today]),
        "401",
        "the token is asked over HTTPS too"
    );
    let bearer = format!("Authorization: Bearer {token}");
    assert_eq!(status(&["-H", &bearer, &today]), "200");
    let (ok, head) = curl(
        &ca,
        &[
            "-i",
            "-d",
            &format!("token={token}"),
            &format!("{base}/login"),
        ],
    );
    assert!(ok, "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no session cookie: {head}"));
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    // Plain HTTP to the HTTPS port, and a client that does not trust the certificate.
    let (plain, said) = curl(&ca, &[&format!("http://{addr}/healthz")]);
    assert!(!plain, "plain HTTP answered: {said}");
    let untrusting = Command::new("curl")
        .args(["-sS", "--max-time", "5", &format!("{base}/healthz")])
        .output()
        .unwrap();
    assert!(
        !untrusting.status.success(),
        "an untrusted certificate was taken"
    );
    assert!(terminate(&mut serve).success());
    let served = std::fs::read_to_string(&log).unwrap();
    assert!(
        !served.contains(token),
        "the token is in the log:\n{served}"
    );

    // A certificate without its key.
    let out = brewline(&["serve", "--data-dir", d, "--addr", &addr])
        .env("BREWLINE_SERVE__TLS_CERTIFICATE", tls.join("server.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("serve.tls_certificate and serve.tls_key go together"),
        "{said}"
    );
}
