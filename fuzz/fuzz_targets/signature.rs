//! The `authorization` header parser and the signing-string rebuild on arbitrary input:
//! neither may panic, and a parsed header's names rebuild a string that names each of them.
#![no_main]

use berth_server::auth::signature::{parse, signing_string};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // header \n method \n request target \n header values (name:value per line)
    let mut parts = text.splitn(4, '\n');
    let (Some(header), Some(method), Some(target)) = (parts.next(), parts.next(), parts.next()) else { return };
    let values: Vec<(&str, &str)> = parts.next().unwrap_or("").lines().filter_map(|l| l.split_once(':')).collect();
    let Ok(signed) = parse(header) else { return };
    let lookup = |name: &str| values.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
    if let Ok(string) = signing_string(&signed.headers, method, target, lookup) {
        assert_eq!(string.lines().count() >= signed.headers.len(), true);
        for name in &signed.headers {
            assert!(string.contains(&format!("{name}: ")), "{name} missing from the signing string");
        }
    }
});
