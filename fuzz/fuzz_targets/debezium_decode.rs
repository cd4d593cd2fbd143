//! Any bytes as a record of the CDC topics: decoded as an order's or a line's change event
//! (whole `source`, and the recommender's lean one), turned into order changes, and assembled
//! with the real suggester. An answer or an error, never a panic.
#![no_main]

use brewline_core::assembly::{EventRef, OrderState};
use brewline_core::debezium::{decode, decode_with, Decoded, OrderLineRow, OrderRow, SourceTime};
use brewline_core::suggestion::{Lookups, RandomStrategy, Suggester};
use brewline_core::{CompletedOrder, ReferenceData};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn lookups() -> &'static Lookups {
    static LOOKUPS: OnceLock<Lookups> = OnceLock::new();
    LOOKUPS.get_or_init(|| {
        let reference = ReferenceData::bundled().expect("the bundled reference data reads");
        Lookups::from_reference(&reference, "ACB")
    })
}

fuzz_target!(|data: &[u8]| {
    let suggester = Suggester::new(7, Box::new(RandomStrategy));
    let suggest = |o: &CompletedOrder| suggester.suggest(o, lookups());
    let at = EventRef {
        topic: "t".into(),
        partition: 0,
        offset: 0,
    };
    let mut changes = Vec::new();
    if let Ok(Decoded::Change(e)) = decode::<OrderRow>(Some(data)) {
        let _ = e.committed_at_us();
        changes.extend(e.order_changes().into_iter().flatten());
    }
    if let Ok(Decoded::Change(e)) = decode_with::<OrderRow, SourceTime>(Some(data)) {
        let _ = e.committed_at_us();
        changes.extend(e.order_changes().into_iter().flatten());
    }
    if let Ok(Decoded::Change(e)) = decode_with::<OrderLineRow, SourceTime>(Some(data)) {
        let _ = e.committed_at_us();
        changes.extend(e.order_changes().into_iter().flatten());
    }
    let mut state = OrderState::default();
    for c in &changes {
        let _ = state.apply(c, &at, &suggest);
    }
});
