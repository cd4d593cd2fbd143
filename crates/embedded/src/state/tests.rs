use super::*;
use brewline_ports::conformance::{self, applied, line, none, placed};

fn open(dir: &Path, ttl: Duration) -> EmbeddedState {
    EmbeddedState::open(&dir.join("state.sqlite"), ttl).unwrap()
}

#[tokio::test]
async fn completes_once_and_replays_the_recorded_suggestion_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    conformance::completes_once_and_replays_the_recorded_suggestion("e", || {
        open(dir.path(), Duration::from_secs(90))
    })
    .await;
}

#[tokio::test]
async fn two_workers_on_one_store_complete_an_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), Duration::from_secs(90));
    let b = open(dir.path(), Duration::from_secs(90));
    conformance::concurrent_workers_complete_each_order_once("e", a, b).await;
}

#[tokio::test]
async fn open_orders_that_expire_are_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_millis(200);
    conformance::open_orders_that_expire_are_reported_once("e", &open(dir.path(), ttl), ttl).await;
}

#[tokio::test]
async fn lookups_are_replaced_whole_with_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    conformance::lookups_are_replaced_whole_with_a_new_version(&open(
        dir.path(),
        Duration::from_secs(90),
    ))
    .await;
}

#[tokio::test]
async fn a_reader_never_sees_half_published_lookups() {
    let dir = tempfile::tempdir().unwrap();
    conformance::a_reader_never_sees_half_published_lookups(open(
        dir.path(),
        Duration::from_secs(90),
    ))
    .await;
}

#[tokio::test]
async fn records_are_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    conformance::records_are_counted_once("e", &open(dir.path(), Duration::from_secs(90))).await;
}

#[tokio::test]
async fn counters_add_up_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    conformance::counters_add_up("e", &open(dir.path(), Duration::from_secs(90))).await;
    let s = open(dir.path(), Duration::from_secs(90));
    assert_eq!(s.get().await.unwrap().get("e-a"), Some(&5), "durable");
}

#[tokio::test]
async fn orders_that_expired_while_no_process_ran_are_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path(), Duration::from_millis(50));
        s.apply(&[applied(placed("left-open", 2), 0)], &none)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    let s = open(dir.path(), Duration::from_millis(50));
    assert_eq!(s.expire().await.unwrap(), vec!["left-open".to_string()]);
    drop(s);
    let s = open(dir.path(), Duration::from_millis(50));
    assert!(
        s.expire().await.unwrap().is_empty(),
        "trimmed from the journal: reported once"
    );
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("state.journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn a_record_cut_short_by_a_crash_is_dropped_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path(), Duration::from_secs(90));
        s.apply(&[applied(placed("o1", 2), 0)], &none)
            .await
            .unwrap();
        s.apply(&[applied(line("o1", "A"), 1)], &none)
            .await
            .unwrap();
    }
    // A crash in the middle of the next append: its header and part of its payload.
    let last = segments(dir.path()).pop().unwrap();
    let whole = std::fs::metadata(&last).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    std::io::Write::write_all(&mut file, &[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
    drop(file);
    let s = open(dir.path(), Duration::from_secs(90));
    assert_eq!(std::fs::metadata(&last).unwrap().len(), whole, "truncated");
    let state = s.order("o1").await.unwrap().unwrap();
    assert_eq!((state.message_count, state.products.len()), (2, 1));
}

#[tokio::test]
async fn a_corrupt_record_before_the_end_fails_the_open_with_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path(), Duration::from_secs(90));
        s.apply(&[applied(placed("o1", 2), 0)], &none)
            .await
            .unwrap();
        s.apply(&[applied(line("o1", "A"), 1)], &none)
            .await
            .unwrap();
    }
    let last = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    bytes[10] ^= 0xff; // inside the first record's payload
    std::fs::write(&last, bytes).unwrap();
    let e = EmbeddedState::open(&dir.path().join("state.sqlite"), Duration::from_secs(90))
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("corrupt at byte 0: checksum mismatch"),
        "{e}"
    );
}

#[tokio::test]
async fn segments_older_than_the_ttl_are_deleted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Duration::from_millis(200));
    s.apply(&[applied(placed("old", 2), 0)], &none)
        .await
        .unwrap();
    // Older than a quarter of the TTL: the next append closes the segment.
    tokio::time::sleep(Duration::from_millis(60)).await;
    s.apply(&[applied(placed("old2", 2), 1)], &none)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(220)).await;
    s.apply(&[applied(placed("new", 2), 2)], &none)
        .await
        .unwrap();
    let before = segments(dir.path()).len();
    assert_eq!(
        s.expire().await.unwrap(),
        vec!["old".to_string(), "old2".to_string()]
    );
    let after = segments(dir.path());
    assert!(after.len() < before, "{before} segments, then {after:?}");
    drop(s);
    let s = open(dir.path(), Duration::from_millis(200));
    assert!(s.order("new").await.unwrap().is_some(), "kept");
    assert!(s.expire().await.unwrap().is_empty(), "reported once");
}
