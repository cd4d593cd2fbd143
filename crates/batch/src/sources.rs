//! Where a run reads from.

use brewline_ports::{EventLog, SourceDb};

/// Where a run reads from: the CDC topics of a log and the source database's dimensions.
pub struct Sources<'a> {
    pub log: &'a dyn EventLog,
    pub orders_topic: &'a str,
    pub order_details_topic: &'a str,
    /// The recommender's suggestions (`order_suggestions`).
    pub suggestions_topic: &'a str,
    pub source: &'a dyn SourceDb,
    /// Land from the earliest events a log still holds when events after the last landing were
    /// deleted (retention) before they were landed; else such a gap fails the bronze gates and
    /// nothing of that topic is landed.
    pub accept_lost_events: bool,
}
