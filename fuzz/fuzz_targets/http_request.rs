//! The proxy's request parser never panics, and whatever it accepts is unambiguous: parsing the
//! accepted head again gives the same request, and the head ends where the parser says.
#![no_main]

use imdsguard_proxy::http1::{Limits, Parse, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Parse::Done(r) = parse_request(data, "169.254.169.254:80", &limits) {
        assert!(r.head_len <= data.len());
        assert!(data[..r.head_len].ends_with(b"\r\n\r\n"));
        assert!(r.http.path.starts_with('/'));
        let path = r.http.path.split('?').next().unwrap_or("");
        assert!(!path.contains("//") && !path.split('/').any(|s| s == ".." || s == "."));
        let again = parse_request(&data[..r.head_len], "169.254.169.254:80", &limits);
        assert_eq!(again, Parse::Done(r));
    }
});
