//! The business of brewline, as plain data and pure functions.
//!
//! Nothing here does I/O or runs async: every rule of the coffee shop — the reference data, the
//! tills' order generator, the Debezium change-event codec, order assembly, eligibility, the
//! suggestion and its discount — can be tested in isolation and reused by every engine.

pub mod assembly;
pub mod calendar;
pub mod debezium;
pub mod generator;
pub mod names;
pub mod order;
pub mod partition;
pub mod query;
pub mod reference;
pub mod sales;
pub mod secrets;
pub mod suggestion;

pub use assembly::{EventRef, OrderChange, OrderState, Step};
pub use order::{CompletedOrder, NewLine, NewOrder, OrderHeader};
pub use reference::{DimensionExtract, ReferenceData, Versioned};
pub use suggestion::{Lookups, Suggestion};
