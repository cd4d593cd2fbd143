//! The accept stage: customers taking a share of the suggestions, whose suggested products are
//! written back to the source as order lines with `is_suggestion = true`.
//!
//! One round is: poll suggestions → decide per order id which customers accept (the same answer
//! for a suggestion delivered again) → write the accepted ones (the source skips a line already
//! written) and dead-letter what is not a suggestion → commit the offsets. Offsets are
//! committed only after the lines are written, so a crash writes nothing twice and loses
//! nothing.

use std::time::Duration;

use brewline_core::suggestion::{accepts, Suggestion};
use brewline_ports::{Consumer, Producer, Result, SourceDb};
use tokio::sync::watch;

use crate::dead_letter::{dead_letter, send_or_dead_letter};
use crate::stats::Stats;
use crate::{commit_with_retries, with_retries};

/// The topics and the share of the accept stage.
#[derive(Debug, Clone)]
pub struct AcceptSettings {
    pub suggestions_topic: String,
    pub dead_letter_topic: String,
    /// Share of customers who accept their suggestion, 0 to 1 (decided per order id).
    pub share: f64,
}

/// The engines the accept stage uses.
pub struct Acceptance<'a> {
    pub consumer: &'a mut dyn Consumer,
    pub producer: &'a dyn Producer,
    pub source: &'a dyn SourceDb,
    pub stats: &'a Stats,
}

/// Reads suggestions and writes those a share of customers accept back to the source, as
/// order lines, until `shutdown`.
pub async fn run(
    settings: &AcceptSettings,
    engines: Acceptance<'_>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    while !*shutdown.borrow() {
        let records = engines
            .consumer
            .poll(1000, Duration::from_millis(200))
            .await?;
        if records.is_empty() {
            continue;
        }
        let mut accepted = Vec::new();
        let mut dead = Vec::new();
        let next = brewline_ports::next_offsets(&records);
        for r in &records {
            let Some(value) = r.record.value.as_deref() else {
                continue;
            };
            match serde_json::from_slice::<Suggestion>(value) {
                Ok(s) if accepts(&s.order_id, settings.share) => accepted.push(s),
                Ok(_) => {}
                Err(err) => dead.push(dead_letter(r, &format!("not a suggestion: {err}"))),
            }
        }
        let written = with_retries("writing accepted suggestions", || {
            engines.source.accept_suggestions(&accepted)
        })
        .await?;
        if !dead.is_empty() {
            let n = dead.len() as u64;
            let dlq = &settings.dead_letter_topic;
            send_or_dead_letter(engines.producer, dlq, &dead, dlq, |_| Vec::new()).await?;
            Stats::add(&engines.stats.dead_letters, n);
        }
        commit_with_retries(engines.consumer, &next).await?;
        engines
            .stats
            .events_in
            .add(&settings.suggestions_topic, records.len() as u64);
        Stats::add(&engines.stats.suggestions_accepted, written);
        tracing::info!(
            read = records.len(),
            accepted = written,
            "suggestions accepted"
        );
    }
    Ok(())
}
