//! The shop's tills writing orders into a source database, as fast as it takes them or at a
//! set rate: shared by `demo` (embedded source) and `simulate` (MySQL/MariaDB).

use std::time::Duration;

use brewline_core::generator::Tills;
use brewline_ports::SourceDb;
use tokio::sync::watch;

/// Orders written per call to the source (each still in a transaction of its own).
const TILL_CHUNK: u64 = 256;

/// Writes `count` orders of `seed`, numbering on after the orders already in the source (so
/// a second run adds new orders), at `rate` orders a second (as fast as possible when
/// `None`). Calls `progress` with the orders written so far; stops early on `shutdown`.
/// `eligible`: a share of the orders made eligible, with the eligible bank.
pub async fn write_orders(
    source: &dyn SourceDb,
    seed: u64,
    count: u64,
    rate: Option<f64>,
    eligible: Option<(f64, &str)>,
    shutdown: &watch::Receiver<bool>,
    progress: impl Fn(u64),
) -> anyhow::Result<u64> {
    let reference = source.load_reference().await?;
    let mut tills = Tills::new(&reference, seed)?;
    if let Some((share, bank)) = eligible {
        tills = tills.with_eligible_share(&reference, share, bank)?;
    }
    let start = source.counts().await?.orders;
    // At a set rate, about 10 ms of orders at a time, each chunk on its schedule.
    let chunk = rate.map_or(TILL_CHUNK, |r| ((r / 100.0) as u64).clamp(1, TILL_CHUNK));
    let began = tokio::time::Instant::now();
    let mut written = 0;
    while written < count && !*shutdown.borrow() {
        let n = chunk.min(count - written);
        let orders: Vec<_> = tills.orders(start + written, n).collect();
        source.insert_orders(&orders).await?;
        written += n;
        progress(written);
        if let Some(r) = rate {
            tokio::time::sleep_until(began + Duration::from_secs_f64(written as f64 / r)).await;
        }
    }
    Ok(written)
}
