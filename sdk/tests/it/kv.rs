//! Typed and raw key-value calls, counters and store failures.

use serde::{Deserialize, Serialize};
use weft_sdk::testing::MockHost;
use weft_sdk::{Error, kv};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    tags: Vec<String>,
}

#[test]
fn typed_values_round_trip_as_json() {
    let host = MockHost::new();
    let profile = Profile {
        name: "ada".into(),
        tags: vec!["admin".into()],
    };
    kv::set("user:1", &profile).unwrap();
    assert_eq!(kv::get::<Profile>("user:1").unwrap(), Some(profile));
    assert_eq!(
        host.kv_raw("user:1").unwrap(),
        br#"{"name":"ada","tags":["admin"]}"#
    );
    assert_eq!(kv::get::<Profile>("user:2").unwrap(), None);
}

#[test]
fn keys_are_raw_utf8() {
    let host = MockHost::new();
    kv::set("a key", &1).unwrap();
    assert_eq!(host.kv_entries().keys().collect::<Vec<_>>(), [b"a key"]);
}

#[test]
fn decoding_the_wrong_type_is_a_json_error() {
    let _host = MockHost::new();
    kv::set("n", &"text").unwrap();
    assert!(matches!(kv::get::<u32>("n"), Err(Error::Json(_))));
}

#[test]
fn raw_values_are_untouched() {
    let _host = MockHost::new();
    kv::set_raw("bin", &[0, 159, 255]).unwrap();
    assert_eq!(kv::get_raw("bin").unwrap(), Some(vec![0, 159, 255]));
    assert!(kv::delete("bin").unwrap());
    assert!(!kv::delete("bin").unwrap());
    assert_eq!(kv::get_raw("bin").unwrap(), None);
}

#[test]
fn increment_keeps_an_i64_le_counter() {
    let host = MockHost::new();
    assert_eq!(kv::increment("c", 5).unwrap(), 5);
    assert_eq!(kv::increment("c", -7).unwrap(), -2);
    assert_eq!(host.kv_raw("c").unwrap(), (-2i64).to_le_bytes());
    assert_eq!(kv::counter("c").unwrap(), -2);
    assert_eq!(kv::counter("missing").unwrap(), 0);
}

#[test]
fn counters_refuse_values_that_are_not_8_bytes() {
    let _host = MockHost::new();
    kv::set("json", &1).unwrap();
    assert!(matches!(kv::counter("json"), Err(Error::Format(_))));
    assert!(matches!(kv::increment("json", 1), Err(Error::Format(_))));
}

#[test]
fn store_failures_surface_as_unavailable() {
    let host = MockHost::new();
    host.fail_kv(Some("replica down"));
    let err = kv::set("k", &1).unwrap_err();
    assert!(matches!(&err, Error::Unavailable(reason) if reason == "replica down"));
    assert_eq!(err.to_string(), "key-value store unavailable: replica down");
}

#[test]
fn new_mock_host_starts_empty() {
    kv::set("left", &1).unwrap();
    weft_sdk::log::info("old line");
    let host = MockHost::new();
    assert!(host.kv_entries().is_empty());
    assert!(host.logs().is_empty());
}
