//! Who gets a suggestion, which product, and at what price.
//!
//! An order is **eligible** when its customer is a diamond customer and it was paid with an ACB
//! payment method. An eligible order gets one product that is not in the order: the one with
//! the highest affinity to the order's products when the batch layer provided an affinity
//! table, else a random one. The randomness is seeded by the run seed and the order id, so the
//! same order always gets the identical suggestion: a replay can only repeat it.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::order::{CompletedOrder, OrderHeader};
use crate::reference::ReferenceData;

/// Name and price of a product, as cached in `product:{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductInfo {
    pub name: String,
    pub unit_price: i64,
}

/// The static lookups the recommender reads: the original `lookup_data_cache`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lookups {
    /// `diamond_customers`: customer ids of tier diamond.
    pub diamond_customers: HashSet<i64>,
    /// `bank_acb_payment`: every payment method whose bank is ACB.
    pub acb_payment_methods: HashSet<i64>,
    /// `product:{id}`: the menu, sorted by id.
    pub products: BTreeMap<String, ProductInfo>,
    /// `product_affinity`: what the batch layer found bought together (empty until it ran).
    #[serde(default)]
    pub affinity: AffinityTable,
}

impl Lookups {
    /// Builds the lookups from reference data; `bank` is the bank of eligible payment methods.
    pub fn from_reference(reference: &ReferenceData, bank: &str) -> Lookups {
        use crate::reference::Tier;
        Lookups {
            diamond_customers: reference
                .customers
                .iter()
                .filter(|c| c.tier == Tier::Diamond)
                .map(|c| c.id)
                .collect(),
            acb_payment_methods: reference
                .payment_methods
                .iter()
                .filter(|p| p.bank.as_deref() == Some(bank))
                .map(|p| p.id)
                .collect(),
            products: reference
                .products
                .iter()
                .map(|p| {
                    let info = ProductInfo {
                        name: p.name.clone(),
                        unit_price: p.unit_price,
                    };
                    (p.id.clone(), info)
                })
                .collect(),
            affinity: AffinityTable::default(),
        }
    }

    /// Diamond customer AND an ACB payment method.
    pub fn is_eligible(&self, order: &OrderHeader) -> bool {
        order
            .customer_id
            .is_some_and(|c| self.diamond_customers.contains(&c))
            && self.acb_payment_methods.contains(&order.payment_method_id)
    }

    /// What these lookups lack to decide an order, if anything: a store that was flushed or
    /// half-restored reads as sets without members, and deciding with them would refuse every
    /// order silently.
    pub fn lacking(&self) -> Option<&'static str> {
        if self.diamond_customers.is_empty() {
            Some("diamond customers")
        } else if self.acb_payment_methods.is_empty() {
            Some("ACB payment methods")
        } else if self.products.is_empty() {
            Some("products")
        } else {
            None
        }
    }
}

/// A suggestion as published to `order_suggestions`: an order line with `is_suggestion`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggestion {
    pub order_id: String,
    pub product_id: String,
    pub product_name: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub discount_percent: i64,
    pub subtotal: i64,
    pub is_suggestion: bool,
    pub customer_id: Option<i64>,
    pub store_id: i64,
    pub payment_method_id: i64,
    /// The order's own products.
    pub order_products: Vec<String>,
    /// `affinity` or `random`: how the product was chosen.
    pub strategy: String,
}

/// For each product, the products most often bought with it, best first, with a score
/// (lift: higher is better). Filled by the batch layer (`brewline batch publish-affinity`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AffinityTable {
    pub related: HashMap<String, Vec<(String, f64)>>,
}

impl AffinityTable {
    /// The candidate with the highest summed score against the order's products, if any
    /// candidate scores above zero. Ties go to the smaller product id.
    pub fn best<'a>(&self, order: &CompletedOrder, candidates: &[&'a str]) -> Option<&'a str> {
        let mut scores: HashMap<&str, f64> = HashMap::new();
        for p in &order.products {
            for (other, score) in self.related.get(p).into_iter().flatten() {
                *scores.entry(other.as_str()).or_default() += score;
            }
        }
        candidates
            .iter()
            .filter_map(|c| scores.get(c).map(|s| (*c, *s)))
            .filter(|(_, s)| *s > 0.0)
            .fold(None, |best: Option<(&str, f64)>, (c, s)| match best {
                Some((_, b)) if b >= s => best,
                _ => Some((c, s)),
            })
            .map(|(c, _)| c)
    }
}

/// Chooses the product to suggest among candidates (the menu less the order's products,
/// never empty, sorted by id).
pub trait SuggestionStrategy: Send + Sync {
    /// The product, and the name of the way it was chosen.
    fn pick<'a>(
        &self,
        order: &CompletedOrder,
        lookups: &Lookups,
        candidates: &[&'a str],
        rng: &mut ChaCha8Rng,
    ) -> (&'a str, &'static str);
}

/// A uniformly random candidate.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomStrategy;

impl SuggestionStrategy for RandomStrategy {
    fn pick<'a>(
        &self,
        _order: &CompletedOrder,
        _lookups: &Lookups,
        candidates: &[&'a str],
        rng: &mut ChaCha8Rng,
    ) -> (&'a str, &'static str) {
        let i = rng.random_range(0..candidates.len());
        (candidates[i], "random")
    }
}

/// The candidate with the highest affinity (the lookups' table) to the order's products, else
/// a random one: the recommender's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct AffinityStrategy;

impl SuggestionStrategy for AffinityStrategy {
    fn pick<'a>(
        &self,
        order: &CompletedOrder,
        lookups: &Lookups,
        candidates: &[&'a str],
        rng: &mut ChaCha8Rng,
    ) -> (&'a str, &'static str) {
        match lookups.affinity.best(order, candidates) {
            Some(p) => (p, "affinity"),
            None => RandomStrategy.pick(order, lookups, candidates, rng),
        }
    }
}

/// The discount factor in whole percent: uniform in [0.50, 0.80], rounded to 2 decimals.
pub fn draw_factor_percent(rng: &mut impl Rng) -> i64 {
    (rng.random_range(0.50..=0.80_f64) * 100.0).round() as i64
}

/// `(subtotal, discount_percent)` for one unit at `factor_percent`:
/// `subtotal = floor(unit_price × factor)`, `discount_percent = round((1 − factor) × 100)`,
/// computed in integers so that no float error moves a price by one đồng.
pub fn discounted(unit_price: i64, factor_percent: i64) -> (i64, i64) {
    (
        (unit_price * factor_percent).div_euclid(100),
        100 - factor_percent,
    )
}

/// FNV-1a of an order id: stable across platforms and releases, unlike std's hasher.
fn order_hash(order_id: &str) -> u64 {
    order_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The random generator of one order: the same run seed and order id give the same draws.
pub fn order_rng(seed: u64, order_id: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ order_hash(order_id))
}

/// Whether the customer of `order_id` accepts its suggestion when a `share` (0 to 1) of
/// customers do: decided by the order id alone, so a redelivered suggestion gets the same
/// answer.
pub fn accepts(order_id: &str, share: f64) -> bool {
    let draw = ChaCha8Rng::seed_from_u64(order_hash(order_id)).random::<f64>();
    draw < share
}

/// Makes suggestions: a pure function of the order, the lookups, the strategy and the seed.
pub struct Suggester {
    seed: u64,
    strategy: Box<dyn SuggestionStrategy>,
}

impl Suggester {
    pub fn new(seed: u64, strategy: Box<dyn SuggestionStrategy>) -> Suggester {
        Suggester { seed, strategy }
    }

    /// The suggestion for a complete order, or `None` when it is not eligible or every product
    /// of the menu is already in it.
    pub fn suggest(&self, order: &CompletedOrder, lookups: &Lookups) -> Option<Suggestion> {
        if !lookups.is_eligible(&order.header) {
            return None;
        }
        let candidates: Vec<&str> = lookups
            .products
            .keys()
            .map(String::as_str)
            .filter(|p| !order.contains(p))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let mut rng = order_rng(self.seed, order.id());
        let (product_id, strategy) = self.strategy.pick(order, lookups, &candidates, &mut rng);
        let info = lookups.products.get(product_id)?;
        let (subtotal, discount_percent) =
            discounted(info.unit_price, draw_factor_percent(&mut rng));
        Some(Suggestion {
            order_id: order.id().to_string(),
            product_id: product_id.to_string(),
            product_name: info.name.clone(),
            quantity: 1,
            unit_price: info.unit_price,
            discount_percent,
            subtotal,
            is_suggestion: true,
            customer_id: order.header.customer_id,
            store_id: order.header.store_id,
            payment_method_id: order.header.payment_method_id,
            order_products: order.products.clone(),
            strategy: strategy.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lookups() -> Lookups {
        Lookups::from_reference(&ReferenceData::bundled().unwrap(), "ACB")
    }

    #[test]
    fn lookups_lacking_any_part_cannot_decide() {
        assert_eq!(lookups().lacking(), None);
        assert_eq!(Lookups::default().lacking(), Some("diamond customers"));
        let mut l = lookups();
        l.acb_payment_methods.clear();
        assert_eq!(l.lacking(), Some("ACB payment methods"));
        let mut l = lookups();
        l.products.clear();
        assert_eq!(l.lacking(), Some("products"));
        let mut l = lookups();
        l.affinity = AffinityTable::default();
        assert_eq!(
            l.lacking(),
            None,
            "the affinity may be empty until a batch run"
        );
    }

    fn order(customer: Option<i64>, payment: i64, products: &[&str]) -> CompletedOrder {
        let mut products: Vec<String> = products.iter().map(|p| p.to_string()).collect();
        products.sort();
        CompletedOrder {
            header: OrderHeader {
                order_id: "8f14e45f-ceea-467f-a8f5-3a4b0a6f1c2d".into(),
                customer_id: customer,
                store_id: 4,
                payment_method_id: payment,
                num_products: products.len() as i64,
            },
            products,
        }
    }

    #[test]
    fn eligibility_needs_diamond_and_acb() {
        let l = lookups();
        assert!(l.is_eligible(&order(Some(7), 9, &["CF01"]).header));
        assert!(
            !l.is_eligible(&order(Some(7), 3, &["CF01"]).header),
            "not ACB"
        );
        assert!(
            !l.is_eligible(&order(Some(15_001), 9, &["CF01"]).header),
            "not diamond"
        );
        assert!(
            !l.is_eligible(&order(None, 9, &["CF01"]).header),
            "no customer"
        );
    }

    #[test]
    fn every_acb_method_counts() {
        let mut r = ReferenceData::bundled().unwrap();
        r.payment_methods[2].bank = Some("ACB".into());
        let l = Lookups::from_reference(&r, "ACB");
        assert_eq!(l.acb_payment_methods, HashSet::from([3, 9]));
    }

    #[test]
    fn discount_math_is_exact() {
        // 45000 × 0.57 is 25649.999… in floating point; the price is 25650.
        assert_eq!(discounted(45_000, 57), (25_650, 43));
        assert_eq!(discounted(30_000, 50), (15_000, 50));
        assert_eq!(discounted(55_000, 80), (44_000, 20));
        assert_eq!(discounted(35_001, 73), (25_550, 27));
    }

    #[test]
    fn affinity_picks_the_best_partner_and_falls_back() {
        let mut table = AffinityTable::default();
        table.related.insert(
            "CF01".into(),
            vec![("C01".into(), 2.0), ("T01".into(), 1.5)],
        );
        table
            .related
            .insert("CF02".into(), vec![("T01".into(), 1.0)]);
        let s = Suggester::new(1, Box::new(AffinityStrategy));
        let l = Lookups {
            affinity: table,
            ..lookups()
        };
        let got = s
            .suggest(&order(Some(7), 9, &["CF01", "CF02"]), &l)
            .unwrap();
        assert_eq!(
            (got.product_id.as_str(), got.strategy.as_str()),
            ("T01", "affinity")
        );
        let got = s.suggest(&order(Some(7), 9, &["CF01", "C01"]), &l).unwrap();
        assert_eq!(got.product_id, "T01", "C01 is in the order already");
        let got = s.suggest(&order(Some(7), 9, &["J01"]), &l).unwrap();
        assert_eq!(got.strategy, "random");
    }

    #[test]
    fn no_suggestion_when_the_order_has_the_whole_menu() {
        let l = lookups();
        let all: Vec<&str> = l.products.keys().map(String::as_str).collect();
        let s = Suggester::new(1, Box::new(RandomStrategy));
        assert_eq!(s.suggest(&order(Some(7), 9, &all), &l), None);
    }

    proptest! {
        #[test]
        fn suggestion_is_outside_the_order_deterministic_and_priced_right(
            seed in any::<u64>(),
            picks in proptest::sample::subsequence((0..24usize).collect::<Vec<_>>(), 1..=3),
            id in "[0-9a-f]{8}",
        ) {
            let l = lookups();
            let menu: Vec<&str> = l.products.keys().map(String::as_str).collect();
            let products: Vec<&str> = picks.iter().map(|i| menu[*i]).collect();
            let mut o = order(Some(7), 9, &products);
            o.header.order_id = id;
            let s = Suggester::new(seed, Box::new(RandomStrategy));
            let got = s.suggest(&o, &l).unwrap();
            prop_assert!(!o.contains(&got.product_id));
            prop_assert!((20..=50).contains(&got.discount_percent));
            let price = l.products[&got.product_id].unit_price;
            prop_assert_eq!(got.unit_price, price);
            prop_assert_eq!(got.subtotal, price * (100 - got.discount_percent) / 100);
            prop_assert!(got.subtotal * 2 >= price && got.subtotal * 10 <= price * 8);
            prop_assert_eq!(got.quantity, 1);
            prop_assert!(got.is_suggestion);
            prop_assert_eq!(Some(got), s.suggest(&o, &l));
        }

        #[test]
        fn factor_is_within_bounds(seed in any::<u64>()) {
            let f = draw_factor_percent(&mut ChaCha8Rng::seed_from_u64(seed));
            prop_assert!((50..=80).contains(&f));
        }
    }

    #[test]
    fn acceptance_is_decided_by_the_order_and_follows_the_share() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("order-{i}")).collect();
        let accepted = |share: f64| ids.iter().filter(|id| accepts(id, share)).count();
        assert_eq!(accepted(1.0), 10_000);
        assert_eq!(accepted(0.0), 0);
        let half = accepted(0.5);
        assert!((4_700..=5_300).contains(&half), "{half}");
        // Decided by the order: an order taken at a share is taken at every larger one.
        for id in &ids {
            assert!(!accepts(id, 0.3) || accepts(id, 0.6), "{id}");
        }
    }
}
