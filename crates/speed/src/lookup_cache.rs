//! The lookup cache (the original `lookup_data_cache`): reference data from the source
//! database and the batch layer's product affinity, published to the lookup store in one
//! atomic swap. Each publisher keeps what the other published.

use brewline_core::suggestion::{AffinityTable, Lookups};
use brewline_ports::{LookupStore, Result, SourceDb};

/// Reads the reference data and publishes the lookups (keeping the affinity in the store);
/// `bank` is the bank whose payment methods make an order eligible. Returns the published
/// lookups and their version.
pub async fn refresh(
    source: &dyn SourceDb,
    store: &dyn LookupStore,
    bank: &str,
) -> Result<(Lookups, u64)> {
    let reference = source.load_reference().await?;
    let (current, _) = store.load().await?;
    let lookups = Lookups {
        affinity: current.affinity,
        ..Lookups::from_reference(&reference, bank)
    };
    let version = store.publish(&lookups).await?;
    tracing::info!(
        version,
        diamond_customers = lookups.diamond_customers.len(),
        acb_payment_methods = lookups.acb_payment_methods.len(),
        products = lookups.products.len(),
        affinity = lookups.affinity.related.len(),
        "lookups published"
    );
    Ok((lookups, version))
}

/// Publishes the batch layer's product affinity, keeping the reference lookups in the store.
/// Returns the version.
pub async fn publish_affinity(store: &dyn LookupStore, affinity: AffinityTable) -> Result<u64> {
    let (current, _) = store.load().await?;
    let products = affinity.related.len();
    let version = store
        .publish(&Lookups {
            affinity,
            ..current
        })
        .await?;
    tracing::info!(version, products, "product affinity published");
    Ok(version)
}
