//! Every query string the REST API parses, on arbitrary input: axum's `Query` extractor
//! over each query type never panics, nor does paging on any cursor.
#![no_main]

use axum::extract::Query;
use axum::http::Uri;
use berth_server::rest::control_plane::{ListQueuesQuery, ListWorkRequestsQuery, PageQuery};
use berth_server::rest::data_plane::{GetMessagesQuery, ListChannelsQuery, ReceiptQuery, StatsQuery};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let Ok(uri) = format!("/q?{query}").parse::<Uri>() else { return };
    let _ = Query::<GetMessagesQuery>::try_from_uri(&uri);
    let _ = Query::<ReceiptQuery>::try_from_uri(&uri);
    let _ = Query::<StatsQuery>::try_from_uri(&uri);
    let _ = Query::<ListChannelsQuery>::try_from_uri(&uri);
    let _ = Query::<ListQueuesQuery>::try_from_uri(&uri);
    let _ = Query::<ListWorkRequestsQuery>::try_from_uri(&uri);
    let _ = Query::<PageQuery>::try_from_uri(&uri);
    // Paging on any cursor: a bad page is an error, never a panic or an overflow.
    if let Ok((offset, limit)) = berth_core::engine::page_window(Some(query), Some(1000)) {
        let _ = berth_core::engine::paged(vec![(); limit as usize + 1], offset, limit);
    }
});
