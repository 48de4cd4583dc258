//! HTTP request heads reach the metrics, admin and PAC listeners before
//! anything is authorised: any bytes get a request or an error, never a
//! panic, and what follows the head never changes it. A request that
//! parses as an admin request travels back and forth through its HTTP
//! form unchanged; `Host` checks and answer parsing (the CLI's side)
//! never panic either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_core::admin::{self, Request};
use sluice_core::http::{self, Hosts};

fuzz_target!(|data: &[u8]| {
    let max = 8192;
    let parsed = http::parse(data, max);
    if let Ok(Some(req)) = &parsed {
        // Bytes after the head (a body, the next request) do not matter.
        let mut more = data.to_vec();
        more.extend_from_slice(b"\r\n\r\nGET /x HTTP/1.1\r\n\r\n");
        assert_eq!(http::parse(&more, max).ok().flatten().as_ref(), Some(req));
        let _ = Hosts::local(["gw.example"], Some("gw-1")).allows(req.host);
        let _ = Hosts::new(["wpad"]).allows(req.host);
        if let Ok(r) = Request::from_http(req.method, req.path, req.query) {
            let target = r.target().expect("a parsed request has an HTTP form");
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            assert_eq!(Request::from_http(r.method(), path, query).as_ref(), Ok(&r));
        }
    }
    // A head is never complete before its end.
    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n")
        && end + 4 < max
    {
        assert_eq!(http::parse(&data[..end + 3], max), Ok(None));
    }
    let _ = admin::parse_response(data);
});
