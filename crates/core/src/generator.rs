//! The shop's tills: orders drawn with the original pipeline's distributions.
//!
//! Order number `i` of seed `s` is always the same order, whatever was generated before it, so a
//! run can continue a sequence where an earlier one stopped.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::order::{NewLine, NewOrder};
use crate::reference::ReferenceData;

/// Customer ids are drawn uniformly from 1 to this.
pub const MAX_CUSTOMER_ID: i64 = 1_000_000;

/// Draws orders for a seed.
#[derive(Debug, Clone)]
pub struct Tills {
    seed: u64,
    /// (product id, unit price), in reference order.
    menu: Vec<(String, i64)>,
    store_ids: Vec<i64>,
    payment_method_ids: Vec<i64>,
    /// Share of orders made eligible for a suggestion, with who and how they pay.
    eligible: Option<Eligible>,
}

#[derive(Debug, Clone)]
struct Eligible {
    share: f64,
    diamond_customers: Vec<i64>,
    payment_method_ids: Vec<i64>,
}

/// The reference data has nothing to sell, or nowhere to sell it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the tills need at least one {0}")]
pub struct NoTills(&'static str);

impl Tills {
    pub fn new(reference: &ReferenceData, seed: u64) -> Result<Tills, NoTills> {
        // Sorted, so that the same seed gives the same orders whatever order a database hands
        // the reference data back in.
        let mut menu: Vec<_> = reference
            .products
            .iter()
            .map(|p| (p.id.clone(), p.unit_price))
            .collect();
        menu.sort();
        let mut store_ids: Vec<_> = reference.stores.iter().map(|s| s.id).collect();
        store_ids.sort_unstable();
        let mut payment_method_ids: Vec<_> =
            reference.payment_methods.iter().map(|p| p.id).collect();
        payment_method_ids.sort_unstable();
        if menu.len() < 3 {
            return Err(NoTills("three products"));
        }
        if store_ids.is_empty() {
            return Err(NoTills("store"));
        }
        if payment_method_ids.is_empty() {
            return Err(NoTills("payment method"));
        }
        Ok(Tills {
            seed,
            menu,
            store_ids,
            payment_method_ids,
            eligible: None,
        })
    }

    /// Tills where a `share` of the orders (0 to 1) is a diamond customer's paid with a method
    /// of `bank`, so that a small run exercises the recommender (with the original's
    /// distributions about 1 order in 800 is). The other orders stay as they were.
    pub fn with_eligible_share(
        mut self,
        reference: &ReferenceData,
        share: f64,
        bank: &str,
    ) -> Result<Tills, NoTills> {
        let mut diamond_customers: Vec<i64> = reference
            .customers
            .iter()
            .filter(|c| c.tier == crate::reference::Tier::Diamond)
            .map(|c| c.id)
            .collect();
        diamond_customers.sort_unstable();
        let mut payment_method_ids: Vec<i64> = reference
            .payment_methods
            .iter()
            .filter(|p| p.bank.as_deref() == Some(bank))
            .map(|p| p.id)
            .collect();
        payment_method_ids.sort_unstable();
        if diamond_customers.is_empty() {
            return Err(NoTills("diamond customer"));
        }
        if payment_method_ids.is_empty() {
            return Err(NoTills("payment method of the eligible bank"));
        }
        self.eligible = Some(Eligible {
            share: share.clamp(0.0, 1.0),
            diamond_customers,
            payment_method_ids,
        });
        Ok(self)
    }

    /// Order number `index` of this seed.
    pub fn order(&self, index: u64) -> NewOrder {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(index);
        let mut id_bytes = [0u8; 16];
        rng.fill(&mut id_bytes);
        let id = uuid::Builder::from_random_bytes(id_bytes)
            .into_uuid()
            .hyphenated()
            .to_string();
        let customer_id = rng.random_range(1..=MAX_CUSTOMER_ID);
        let store_id = self.store_ids[rng.random_range(0..self.store_ids.len())];
        let payment_method_id =
            self.payment_method_ids[rng.random_range(0..self.payment_method_ids.len())];
        let count = match rng.random::<f64>() {
            x if x < 0.75 => 1,
            x if x < 0.90 => 2,
            _ => 3,
        };
        let lines = self
            .menu
            .choose_multiple(&mut rng, count)
            .map(|(product_id, unit_price)| {
                let quantity = match rng.random::<f64>() {
                    x if x < 0.875 => 1,
                    x if x < 0.975 => 2,
                    _ => 3,
                };
                NewLine {
                    product_id: product_id.clone(),
                    quantity,
                    unit_price: *unit_price,
                    subtotal: unit_price * quantity,
                }
            })
            .collect::<Vec<_>>();
        let (mut customer_id, mut payment_method_id) = (customer_id, payment_method_id);
        if let Some(e) = &self.eligible {
            if rng.random::<f64>() < e.share {
                customer_id = e.diamond_customers[rng.random_range(0..e.diamond_customers.len())];
                payment_method_id =
                    e.payment_method_ids[rng.random_range(0..e.payment_method_ids.len())];
            }
        }
        NewOrder {
            id,
            customer_id,
            store_id,
            payment_method_id,
            lines,
        }
    }

    /// Orders `start..start+count`.
    pub fn orders(&self, start: u64, count: u64) -> impl Iterator<Item = NewOrder> + '_ {
        (start..start + count).map(move |i| self.order(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn tills(seed: u64) -> Tills {
        Tills::new(&ReferenceData::bundled().unwrap(), seed).unwrap()
    }

    #[test]
    fn same_seed_same_orders_and_independent_of_start() {
        let a: Vec<_> = tills(7).orders(0, 50).collect();
        let b: Vec<_> = tills(7).orders(0, 50).collect();
        assert_eq!(a, b);
        let tail: Vec<_> = tills(7).orders(20, 30).collect();
        assert_eq!(&a[20..], &tail[..]);
        let other: Vec<_> = tills(8).orders(0, 50).collect();
        assert_ne!(a, other);
    }

    #[test]
    fn orders_follow_the_spec() {
        let reference = ReferenceData::bundled().unwrap();
        let t = Tills::new(&reference, 42).unwrap();
        let n = 40_000u64;
        let mut sizes = [0u64; 4];
        let mut quantities = [0u64; 4];
        let mut ids = HashSet::new();
        let mut diamond = 0u64;
        let diamonds: HashSet<_> = reference.customers.iter().map(|c| c.id).collect();
        for o in t.orders(0, n) {
            assert!(ids.insert(o.id.clone()), "order ids are unique");
            assert_eq!(o.id.len(), 36);
            assert!((1..=MAX_CUSTOMER_ID).contains(&o.customer_id));
            assert!((1..=1000).contains(&o.store_id));
            assert!((1..=12).contains(&o.payment_method_id));
            sizes[o.lines.len()] += 1;
            let distinct: HashSet<_> = o.lines.iter().map(|l| &l.product_id).collect();
            assert_eq!(distinct.len(), o.lines.len(), "products are distinct");
            for l in &o.lines {
                quantities[l.quantity as usize] += 1;
                let p = reference.product(&l.product_id).unwrap();
                assert_eq!(l.unit_price, p.unit_price);
                assert_eq!(l.subtotal, l.unit_price * l.quantity);
            }
            diamond += u64::from(diamonds.contains(&o.customer_id));
        }
        let share = |k: u64, of: u64| k as f64 / of as f64;
        assert!((share(sizes[1], n) - 0.75).abs() < 0.01, "{sizes:?}");
        assert!((share(sizes[2], n) - 0.15).abs() < 0.01, "{sizes:?}");
        assert!((share(sizes[3], n) - 0.10).abs() < 0.01, "{sizes:?}");
        let lines: u64 = quantities.iter().sum();
        assert!((share(quantities[1], lines) - 0.875).abs() < 0.01);
        assert!((share(quantities[3], lines) - 0.025).abs() < 0.005);
        assert!((share(diamond, n) - 0.015).abs() < 0.003, "{diamond}");
    }

    #[test]
    fn an_eligible_share_changes_only_who_pays_how() {
        let reference = ReferenceData::bundled().unwrap();
        let plain: Vec<_> = tills(5).orders(0, 4000).collect();
        let shaped: Vec<_> = tills(5)
            .with_eligible_share(&reference, 0.25, "ACB")
            .unwrap()
            .orders(0, 4000)
            .collect();
        let lookups = crate::suggestion::Lookups::from_reference(&reference, "ACB");
        let mut eligible = 0;
        for (p, s) in plain.iter().zip(&shaped) {
            assert_eq!((&p.id, p.store_id, &p.lines), (&s.id, s.store_id, &s.lines));
            let header = crate::order::OrderHeader {
                order_id: s.id.clone(),
                customer_id: Some(s.customer_id),
                store_id: s.store_id,
                payment_method_id: s.payment_method_id,
                num_products: s.num_products(),
            };
            eligible += u32::from(lookups.is_eligible(&header));
        }
        assert!((900..1100).contains(&eligible), "{eligible} of 4000");
        let none =
            Tills::new(&reference, 5)
                .unwrap()
                .with_eligible_share(&reference, 0.5, "No Such Bank");
        assert!(none.is_err());
    }
}
