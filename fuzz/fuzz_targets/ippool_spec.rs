//! IPPool specs as the API server hands them over (JSON), MetalLB's legacy ConfigMap (YAML) and address
//! ranges (`lb-controller`'s `pool::PoolDef::from_spec`, `legacy::parse`, `ranges::AddressRange`): written by
//! whoever may edit pools, and read by the controller on every pass.
//!
//! The input is tried as all three: the JSON of a spec, the YAML of a legacy config, and each line as a range.
//!
//! Asserts: nothing panics; a spec that parses serialises back to the same spec; every range of an accepted
//! pool has its ends in order and of one family, holds both ends, starts its iteration at its first
//! address, and prints as text that parses back to the same range; selectors of an accepted pool evaluate.
#![no_main]

use std::collections::BTreeMap;

use lb_controller::legacy;
use lb_controller::pool::{IPPoolSpec, PoolDef};
use lb_controller::ranges::{AddressRange, Family};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = serde_json::from_slice::<IPPoolSpec>(data) {
        let json = serde_json::to_value(&spec).expect("a spec serialises");
        let again: IPPoolSpec = serde_json::from_value(json).expect("a serialised spec parses");
        assert_eq!(again, spec);
        if let Ok(pool) = PoolDef::from_spec("fuzz", &spec) {
            check_pool(&pool);
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (legacy, _errors) = legacy::parse(Some(text));
    legacy.pools.iter().for_each(check_pool);
    for line in text.lines() {
        if let Ok(range) = line.parse::<AddressRange>() {
            check_range(&range);
        }
    }
});

fn check_pool(pool: &PoolDef) {
    assert!(!pool.ranges.is_empty());
    pool.ranges.iter().for_each(check_range);
    let labels: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
    let _ = pool.admits("default", &labels, &labels);
    let _ = pool.announces_on(&labels);
    let _ = pool.has_family(Family::V4);
}

fn check_range(range: &AddressRange) {
    assert!(range.first() <= range.last());
    assert_eq!(Family::of(range.first()), Family::of(range.last()));
    assert!(range.contains(range.first()) && range.contains(range.last()));
    assert!(range.size() >= 1);
    assert_eq!(range.iter_from(range.last()).next(), Some(range.last()));
    assert_eq!(range.iter_from(range.first()).next(), Some(range.first()));
    let text = range.to_string();
    assert_eq!(text.parse::<AddressRange>().as_ref(), Ok(range), "{text}");
}
