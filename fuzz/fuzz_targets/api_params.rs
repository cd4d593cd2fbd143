//! Any query string for the API's routes: read into its parameters as the routes read them
//! (percent-decoded, `serde_urlencoded`), then checked as dates, day ranges and limits. An
//! answer or a message, never a panic; what is accepted keeps its promises.
#![no_main]

use brewline_core::query::{date, day_name, day_range, limit, parse_day};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    date: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(p) = serde_urlencoded::from_bytes::<Params>(data) else {
        return;
    };
    let today = 20_000;
    if let Some(d) = p.date.as_deref() {
        if let Some(day) = parse_day(d) {
            assert_eq!(day_name(day), d, "a day read is its own spelling");
        }
    }
    let _ = date("date", p.date.as_deref(), today);
    if let Ok((from, to)) = day_range(p.from.as_deref(), p.to.as_deref(), today, 366) {
        assert!(from <= to && to - from < 366, "{from}..{to}");
    }
    if let Ok(n) = limit(p.limit.as_deref(), 5, 100) {
        assert!((1..=100).contains(&n), "{n}");
    }
});
