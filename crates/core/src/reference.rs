//! Reference data of the shop: stores, payment methods, product categories, products and the
//! diamond customers, parsed from the CSV extracts the original pipeline shipped.
//!
//! The extracts use CRLF or LF line endings and the string `null` for "no value"; both are
//! handled here. A copy of the real data ships with the crate ([`ReferenceData::bundled`]).

use std::collections::BTreeMap;

/// A store of the "Kofi" chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub id: i64,
    pub name: String,
    pub address: String,
    pub district: String,
    pub city: String,
}

/// A way to pay; `bank` is `None` for cash and credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethod {
    pub id: i64,
    pub method_name: String,
    pub bank: Option<String>,
}

/// Coffee, Tea, Yogurt, Juice or Cake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub id: i64,
    pub name: String,
}

/// A product on the menu; prices are whole VND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub category_id: i64,
    pub unit_price: i64,
}

/// Customer tiers, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Regular,
    Silver,
    Gold,
    Diamond,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Regular => "regular",
            Tier::Silver => "silver",
            Tier::Gold => "gold",
            Tier::Diamond => "diamond",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "regular" => Some(Tier::Regular),
            "silver" => Some(Tier::Silver),
            "gold" => Some(Tier::Gold),
            "diamond" => Some(Tier::Diamond),
            _ => None,
        }
    }
}

/// A registered customer. The phone number is text: its leading zero matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub phone_number: String,
    pub tier: Tier,
}

/// All reference data of the shop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceData {
    pub stores: Vec<Store>,
    pub payment_methods: Vec<PaymentMethod>,
    pub categories: Vec<Category>,
    pub products: Vec<Product>,
    pub customers: Vec<Customer>,
}

/// A dimension row with the time it last changed in the source (`updated_at`, epoch ms,
/// the source's DATETIME read as UTC as Debezium reads it): a new `updated_at` is a new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub row: T,
    pub updated_at_ms: i64,
}

/// The dimension tables as the batch layer extracts them, each row with its `updated_at`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DimensionExtract {
    pub stores: Vec<Versioned<Store>>,
    pub payment_methods: Vec<Versioned<PaymentMethod>>,
    pub categories: Vec<Versioned<Category>>,
    pub products: Vec<Versioned<Product>>,
}

impl DimensionExtract {
    /// The rows without their times, next to `customers`, as reference data.
    pub fn into_reference(self, customers: Vec<Customer>) -> ReferenceData {
        fn rows<T>(v: Vec<Versioned<T>>) -> Vec<T> {
            v.into_iter().map(|v| v.row).collect()
        }
        ReferenceData {
            stores: rows(self.stores),
            payment_methods: rows(self.payment_methods),
            categories: rows(self.categories),
            products: rows(self.products),
            customers,
        }
    }
}

/// A reference extract that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {reason}")]
pub struct ReferenceError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

/// The CSV texts of the five extracts.
#[derive(Debug, Clone, Copy)]
pub struct ReferenceCsv<'a> {
    pub stores: &'a str,
    pub payment_method: &'a str,
    pub product_category: &'a str,
    pub products: &'a str,
    pub diamond_customers: &'a str,
}

impl ReferenceCsv<'static> {
    /// The copy of the real extracts that ships with brewline (`crates/core/data/reference/`).
    pub const BUNDLED: ReferenceCsv<'static> = ReferenceCsv {
        stores: include_str!("../data/reference/stores.csv"),
        payment_method: include_str!("../data/reference/payment_method.csv"),
        product_category: include_str!("../data/reference/product_category.csv"),
        products: include_str!("../data/reference/products.csv"),
        diamond_customers: include_str!("../data/reference/diamond_customers.csv"),
    };
}

impl ReferenceData {
    /// The shop's real reference data, as bundled with brewline.
    pub fn bundled() -> Result<ReferenceData, ReferenceError> {
        ReferenceData::from_csv(ReferenceCsv::BUNDLED)
    }

    /// Parses the five extracts.
    pub fn from_csv(csv: ReferenceCsv<'_>) -> Result<ReferenceData, ReferenceError> {
        let stores = parse_table(
            "stores.csv",
            csv.stores,
            &["id", "name", "address", "district", "city"],
            |f| {
                Ok(Store {
                    id: f.int(0)?,
                    name: f.text(1)?,
                    address: f.text(2)?,
                    district: f.text(3)?,
                    city: f.text(4)?,
                })
            },
        )?;
        let payment_methods = parse_table(
            "payment_method.csv",
            csv.payment_method,
            &["id", "method_name", "bank"],
            |f| {
                Ok(PaymentMethod {
                    id: f.int(0)?,
                    method_name: f.text(1)?,
                    bank: f.optional_text(2),
                })
            },
        )?;
        let categories = parse_table(
            "product_category.csv",
            csv.product_category,
            &["id", "name"],
            |f| {
                Ok(Category {
                    id: f.int(0)?,
                    name: f.text(1)?,
                })
            },
        )?;
        let products = parse_table(
            "products.csv",
            csv.products,
            &["id", "name", "category", "unit_price"],
            |f| {
                Ok(Product {
                    id: f.text(0)?,
                    name: f.text(1)?,
                    category_id: f.int(2)?,
                    unit_price: f.int(3)?,
                })
            },
        )?;
        let customers = parse_table(
            "diamond_customers.csv",
            csv.diamond_customers,
            &["id", "name", "phone_number"],
            |f| {
                Ok(Customer {
                    id: f.int(0)?,
                    name: f.text(1)?,
                    phone_number: f.text(2)?,
                    tier: Tier::Diamond,
                })
            },
        )?;
        let data = ReferenceData {
            stores,
            payment_methods,
            categories,
            products,
            customers,
        };
        data.check()?;
        Ok(data)
    }

    /// Keys are unique, products name a known category, prices are positive.
    fn check(&self) -> Result<(), ReferenceError> {
        fn unique<K: Ord + std::fmt::Debug>(
            file: &str,
            keys: impl Iterator<Item = K>,
        ) -> Result<(), ReferenceError> {
            let mut seen = BTreeMap::new();
            for (i, k) in keys.enumerate() {
                if let Some(first) = seen.insert(k, i) {
                    return Err(ReferenceError {
                        file: file.into(),
                        line: i + 2,
                        reason: format!("duplicate id, first seen on line {}", first + 2),
                    });
                }
            }
            Ok(())
        }
        unique("stores.csv", self.stores.iter().map(|s| s.id))?;
        unique(
            "payment_method.csv",
            self.payment_methods.iter().map(|p| p.id),
        )?;
        unique("product_category.csv", self.categories.iter().map(|c| c.id))?;
        unique("products.csv", self.products.iter().map(|p| p.id.clone()))?;
        unique("diamond_customers.csv", self.customers.iter().map(|c| c.id))?;
        for (i, p) in self.products.iter().enumerate() {
            let bad = |reason: String| ReferenceError {
                file: "products.csv".into(),
                line: i + 2,
                reason,
            };
            if !self.categories.iter().any(|c| c.id == p.category_id) {
                return Err(bad(format!("unknown category {}", p.category_id)));
            }
            if p.unit_price <= 0 {
                return Err(bad(format!("unit_price {} is not positive", p.unit_price)));
            }
        }
        Ok(())
    }

    pub fn product(&self, id: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.id == id)
    }
}

/// The fields of one CSV record, with typed accessors that say what is wrong.
struct Fields<'a> {
    values: Vec<String>,
    columns: &'a [&'a str],
}

impl Fields<'_> {
    fn raw(&self, i: usize) -> Result<&str, String> {
        self.values
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing column `{}`", self.columns[i]))
    }

    fn text(&self, i: usize) -> Result<String, String> {
        let v = self.raw(i)?;
        if v == "null" || v.is_empty() {
            return Err(format!("column `{}` is empty", self.columns[i]));
        }
        Ok(v.to_string())
    }

    fn optional_text(&self, i: usize) -> Option<String> {
        match self.raw(i) {
            Ok(v) if v != "null" && !v.is_empty() => Some(v.to_string()),
            _ => None,
        }
    }

    fn int(&self, i: usize) -> Result<i64, String> {
        let v = self.raw(i)?;
        v.parse()
            .map_err(|_| format!("column `{}` is not a whole number: {v:?}", self.columns[i]))
    }
}

fn parse_table<T>(
    file: &str,
    text: &str,
    columns: &[&str],
    row: impl Fn(&Fields<'_>) -> Result<T, String>,
) -> Result<Vec<T>, ReferenceError> {
    let err = |line: usize, reason: String| ReferenceError {
        file: file.into(),
        line,
        reason,
    };
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r')).enumerate();
    let header = match lines.next() {
        Some((_, h)) => split_csv_line(h.trim_start_matches('\u{feff}')),
        None => return Err(err(1, "the file is empty".into())),
    };
    if header
        .iter()
        .map(String::as_str)
        .ne(columns.iter().copied())
    {
        return Err(err(
            1,
            format!("header is {header:?}, expected {columns:?}"),
        ));
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let fields = Fields {
            values: split_csv_line(line),
            columns,
        };
        if fields.values.len() != columns.len() {
            return Err(err(
                i + 1,
                format!("{} fields, expected {}", fields.values.len(), columns.len()),
            ));
        }
        out.push(row(&fields).map_err(|reason| err(i + 1, reason))?);
    }
    Ok(out)
}

/// Splits one CSV line, honouring double quotes (`"a, b"` and `""` inside quotes).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|f| f.trim().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_data_is_the_real_shop() {
        let d = ReferenceData::bundled().unwrap();
        assert_eq!(d.stores.len(), 1000);
        assert_eq!(d.payment_methods.len(), 12);
        assert_eq!(d.categories.len(), 5);
        assert_eq!(d.products.len(), 24);
        assert_eq!(d.customers.len(), 15_000);
        let acb: Vec<_> = d
            .payment_methods
            .iter()
            .filter(|p| p.bank.as_deref() == Some("ACB"))
            .map(|p| p.id)
            .collect();
        assert_eq!(acb, vec![9]);
        assert_eq!(
            d.payment_methods[0].bank, None,
            "the string null means no bank"
        );
        assert_eq!(d.product("CF01").unwrap().unit_price, 30_000);
        assert!(d.customers.iter().all(|c| c.tier == Tier::Diamond));
        assert!(
            d.customers.iter().any(|c| c.phone_number.starts_with('0')),
            "phone numbers keep their leading zero"
        );
        let cities: std::collections::BTreeSet<_> =
            d.stores.iter().map(|s| s.city.as_str()).collect();
        assert_eq!(
            cities.into_iter().collect::<Vec<_>>(),
            ["Can Tho", "Hanoi", "Ho Chi Minh"]
        );
    }

    fn small(products: &str) -> ReferenceCsv<'_> {
        ReferenceCsv {
            stores: "id,name,address,district,city\r\n1,Kofi,\"1, Le Duan\",1,Hanoi\r\n",
            payment_method: "id,method_name,bank\r\n1,cash,null\r\n9,bank transfer,ACB\r\n",
            product_category: "id,name\r\n1,Coffee\r\n",
            products,
            diamond_customers: "id,name,phone_number\r\n7,An,0901234567\r\n",
        }
    }

    #[test]
    fn crlf_quotes_and_null_are_handled() {
        let d = ReferenceData::from_csv(small(
            "id,name,category,unit_price\r\nCF01,Black Coffee,1,30000\r\n",
        ))
        .unwrap();
        assert_eq!(d.stores[0].address, "1, Le Duan");
        assert_eq!(d.stores[0].city, "Hanoi", "no trailing carriage return");
        assert_eq!(d.payment_methods[0].bank, None);
        assert_eq!(d.payment_methods[1].bank.as_deref(), Some("ACB"));
        assert_eq!(d.customers[0].phone_number, "0901234567");
    }

    #[test]
    fn bad_rows_say_where_and_why() {
        let e = ReferenceData::from_csv(small(
            "id,name,category,unit_price\nCF01,Black Coffee,1,cheap\n",
        ))
        .unwrap_err();
        assert_eq!(e.file, "products.csv");
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("unit_price"), "{e}");

        let e = ReferenceData::from_csv(small(
            "id,name,category,unit_price\nCF01,Black Coffee,8,1\n",
        ))
        .unwrap_err();
        assert!(e.reason.contains("unknown category 8"), "{e}");

        let e = ReferenceData::from_csv(small("id,title\n")).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.reason.contains("header"), "{e}");

        let e = ReferenceData::from_csv(small("id,name,category,unit_price\nA,x,1,1\nA,y,1,2\n"))
            .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("duplicate"), "{e}");
    }
}
