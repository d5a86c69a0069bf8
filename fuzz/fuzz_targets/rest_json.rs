//! Every JSON request body the REST API parses, on arbitrary bytes: parsing never panics and
//! a failure is always one of OCI's client errors.
#![no_main]

use berth_server::rest::dto::*;
use berth_server::rest::error::ApiError;
use berth_server::rest::extract::parse_json;
use libfuzzer_sys::fuzz_target;

fn check<T: serde::de::DeserializeOwned>(body: &[u8]) {
    if let Err(e) = parse_json::<T>(body) {
        assert_eq!(e.status().as_u16(), 400, "{e:?}");
        assert!(!matches!(e, ApiError::Panic));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    match which % 10 {
        0 => check::<PutMessagesDetails>(body),
        1 => check::<UpdateMessageDetails>(body),
        2 => check::<UpdateMessagesDetails>(body),
        3 => check::<DeleteMessagesDetails>(body),
        4 => check::<RedriveDetails>(body),
        5 => check::<CreateQueueDetails>(body),
        6 => check::<UpdateQueueDetails>(body),
        7 => check::<ChangeCompartmentDetails>(body),
        8 => check::<PurgeQueueDetails>(body),
        _ => check::<serde_json::Value>(body),
    }
});
