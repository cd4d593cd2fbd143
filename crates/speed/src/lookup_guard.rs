//! When lookups read from the store may replace the ones a recommender decides with.
//!
//! A Redis that was flushed, restarted without persistence or restored from an older snapshot
//! hands back no lookups, older ones, or sets without members. Deciding with those would refuse
//! every order silently and record that refusal for good (a replay repeats a recorded
//! decision), so the recommender keeps deciding with the last good lookups and says it is
//! degraded instead. Versions only grow: a publication's version is at least its time in
//! milliseconds, so lookups loaded again into an emptied store are newer than any lost.

use brewline_core::suggestion::Lookups;

/// Why lookups of version `found_version` read from the store must not replace those of
/// version `in_force` (0: none yet); `None` when they may.
pub fn refusal(in_force: u64, found_version: u64, found: &Lookups) -> Option<String> {
    let keeping = if in_force == 0 {
        "waiting for lookups".to_string()
    } else {
        format!("keeping version {in_force}")
    };
    let why = if found_version == 0 {
        "the lookup store has no lookups (flushed, or restarted without persistence)".to_string()
    } else if found_version < in_force {
        format!("the lookup store's lookups (version {found_version}) are older than those in force (restored from an older snapshot?)")
    } else if let Some(part) = found.lacking() {
        format!("the lookup store's lookups (version {found_version}) have no {part}")
    } else {
        return None;
    };
    Some(format!(
        "{why}: {keeping}; load the cache again (`brewline cache load`)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use brewline_core::ReferenceData;

    fn good() -> Lookups {
        Lookups::from_reference(&ReferenceData::bundled().unwrap(), "ACB")
    }

    #[test]
    fn newer_whole_lookups_are_adopted() {
        assert_eq!(refusal(0, 1, &good()), None);
        assert_eq!(refusal(5, 6, &good()), None);
        assert_eq!(refusal(5, 5, &good()), None, "the same version again");
    }

    #[test]
    fn missing_older_or_empty_lookups_are_refused_with_what_to_do() {
        let none = refusal(7, 0, &Lookups::default()).unwrap();
        assert!(none.contains("no lookups") && none.contains("keeping version 7"));
        assert!(none.contains("brewline cache load"));
        let older = refusal(7, 3, &good()).unwrap();
        assert!(older.contains("older"), "{older}");
        let mut half = good();
        half.diamond_customers.clear();
        let empty = refusal(7, 9, &half).unwrap();
        assert!(empty.contains("no diamond customers"), "{empty}");
        let waiting = refusal(0, 0, &Lookups::default()).unwrap();
        assert!(waiting.contains("waiting for lookups"), "{waiting}");
    }
}
