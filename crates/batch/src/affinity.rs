//! The product affinity mart as the speed layer's lookup: for each product, the products most
//! often bought with it beyond chance (lift above 1), best first.

use brewline_core::suggestion::AffinityTable;

use crate::lake::{column, Lake};
use crate::Result;

/// The mart the table is read from.
pub const MART: &str = "mart/product_affinity";

/// What goes into the lookup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffinityRule {
    /// Related products kept per product.
    pub top: usize,
    /// Orders a pair must share to count (lift on a handful of orders is noise).
    pub min_together: i64,
}

impl Default for AffinityRule {
    fn default() -> Self {
        AffinityRule {
            top: 5,
            min_together: 2,
        }
    }
}

/// One row of the mart.
#[derive(Debug, Clone, PartialEq)]
struct Pair {
    product: String,
    other: String,
    together: i64,
    lift: f64,
}

/// The affinity lookup from the mart's rows: per product, pairs with lift above 1 and at least
/// `min_together` shared orders, by lift then shared orders (then id, so ties are stable), at
/// most `top` of them.
fn table(mut pairs: Vec<Pair>, rule: AffinityRule) -> AffinityTable {
    pairs.retain(|p| p.lift > 1.0 && p.together >= rule.min_together && p.product != p.other);
    pairs.sort_by(|a, b| {
        a.product
            .cmp(&b.product)
            .then(b.lift.total_cmp(&a.lift))
            .then(b.together.cmp(&a.together))
            .then(a.other.cmp(&b.other))
    });
    let mut out = AffinityTable::default();
    for p in pairs {
        let related = out.related.entry(p.product).or_default();
        if related.len() < rule.top {
            related.push((p.other, p.lift));
        }
    }
    out
}

/// The affinity lookup from the lake's mart (empty when the mart was never built).
pub async fn from_lake(lake: &Lake, rule: AffinityRule) -> Result<AffinityTable> {
    let mut pairs = Vec::new();
    for b in lake.read(MART).await? {
        let product = column::<String>(&b, MART, "product_id")?;
        let other = column::<String>(&b, MART, "other_product_id")?;
        let together = column::<i64>(&b, MART, "together")?;
        let lift = column::<f64>(&b, MART, "lift")?;
        for i in 0..b.num_rows() {
            if let (Some(Some(p)), Some(Some(o)), Some(Some(t)), Some(Some(l))) =
                (product.get(i), other.get(i), together.get(i), lift.get(i))
            {
                pairs.push(Pair {
                    product: p.clone(),
                    other: o.clone(),
                    together: *t,
                    lift: *l,
                });
            }
        }
    }
    Ok(table(pairs, rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(product: &str, other: &str, together: i64, lift: f64) -> Pair {
        Pair {
            product: product.into(),
            other: other.into(),
            together,
            lift,
        }
    }

    #[test]
    fn keeps_the_best_partners_beyond_chance() {
        let t = table(
            vec![
                pair("A", "B", 10, 1.5),
                pair("A", "C", 10, 2.5),
                pair("A", "D", 1, 9.0),  // too few orders
                pair("A", "E", 50, 0.9), // below chance
                pair("A", "F", 12, 1.5), // ties B on lift, more orders
                pair("A", "G", 3, 1.2),
                pair("B", "A", 10, 1.5),
            ],
            AffinityRule {
                top: 3,
                min_together: 2,
            },
        );
        assert_eq!(
            t.related["A"],
            vec![("C".into(), 2.5), ("F".into(), 1.5), ("B".into(), 1.5)]
        );
        assert_eq!(t.related["B"], vec![("A".into(), 1.5)]);
        assert_eq!(t.related.len(), 2);
    }
}
