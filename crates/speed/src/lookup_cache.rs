//! The lookup cache (the original `lookup_data_cache`): reference data from the source
//! database, published to the lookup store in one atomic swap.

use brewline_core::suggestion::Lookups;
use brewline_ports::{LookupStore, Result, SourceDb};

/// Reads the reference data and publishes the lookups; `bank` is the bank whose payment methods
/// make an order eligible. Returns the published lookups and their version.
pub async fn refresh(
    source: &dyn SourceDb,
    store: &dyn LookupStore,
    bank: &str,
) -> Result<(Lookups, u64)> {
    let reference = source.load_reference().await?;
    let lookups = Lookups::from_reference(&reference, bank);
    let version = store.publish(&lookups).await?;
    tracing::info!(
        version,
        diamond_customers = lookups.diamond_customers.len(),
        acb_payment_methods = lookups.acb_payment_methods.len(),
        products = lookups.products.len(),
        "lookups published"
    );
    Ok((lookups, version))
}
