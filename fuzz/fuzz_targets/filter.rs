//! The consumer group filter parser: arbitrary text never panics; a filter that parses
//! prints as text that parses back to it, and evaluates on any properties without panic.
#![no_main]

use std::collections::BTreeMap;

use berth_core::filter::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(Some(filter)) = parse(text) else { return };
    let printed = filter.to_string();
    // The canonical text may be longer than the input (`4` prints as `4.0`); the length
    // limit is on what clients send.
    if printed.len() > berth_core::filter::MAX_FILTER_BYTES {
        return;
    }
    assert_eq!(parse(&printed).expect("its own text parses"), Some(filter.clone()), "{printed}");
    // Properties made of the input's words, so that some tests hit and some miss.
    let properties: BTreeMap<String, String> =
        text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| (w.into(), w.into())).collect();
    let _ = filter.matches(Some(&properties));
    let _ = filter.matches(None);
});
