//! The rows of the shop's tables as brewline reads them from change events: only the columns
//! it needs, in the value types Debezium writes.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A row of `coffee_shop.orders`, as far as brewline reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRow {
    pub id: String,
    /// DATETIME: epoch millis; TIMESTAMP: an ISO-8601 string.
    #[serde(default)]
    pub timestamp: Option<Moment>,
    #[serde(default)]
    pub customer_id: Option<i64>,
    pub store_id: i64,
    pub payment_method_id: i64,
    pub num_products: i64,
    #[serde(default)]
    pub status: Option<String>,
}

/// A row of `coffee_shop.order_details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLineRow {
    pub order_id: String,
    pub product_id: String,
    pub quantity: i64,
    #[serde(default)]
    pub discount_percent: i64,
    pub subtotal: i64,
    /// BOOLEAN, or TINYINT(1) as 0/1.
    #[serde(default, deserialize_with = "flag")]
    pub is_suggestion: bool,
}

/// A point in time as Debezium writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Moment {
    /// `io.debezium.time.Timestamp`: epoch milliseconds (DATETIME).
    Millis(i64),
    /// `io.debezium.time.ZonedTimestamp`: ISO-8601 text (TIMESTAMP).
    Text(String),
}

impl Moment {
    /// Epoch milliseconds (ISO-8601 text is read as UTC); `None` when the text is not a time.
    pub fn millis(&self) -> Option<i64> {
        match self {
            Moment::Millis(ms) => Some(*ms),
            Moment::Text(t) => crate::calendar::millis_of_iso(t),
        }
    }
}

impl<'de> Deserialize<'de> for Moment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Moment, D::Error> {
        struct MomentVisitor;
        impl Visitor<'_> for MomentVisitor {
            type Value = Moment;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("epoch milliseconds or an ISO-8601 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Moment, E> {
                Ok(Moment::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Moment, E> {
                i64::try_from(v)
                    .map(Moment::Millis)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Moment, E> {
                Ok(Moment::Text(v.to_string()))
            }
        }
        d.deserialize_any(MomentVisitor)
    }
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct Flag;
    impl Visitor<'_> for Flag {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a boolean or 0/1")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            self.visit_i64(v as i64)
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    d.deserialize_any(Flag)
}
