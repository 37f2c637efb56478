//! Identifier syntax against the official interop vectors
//! (`testdata/interop/syntax/*.txt`), plus behaviour the vectors do not pin:
//! TID integers and generation, AT-URI parts, datetime instants and lenient
//! parsing.

use crate::*;
use proptest::prelude::*;
use skyhouse_atproto::syntax::{
    is_valid_uri, parse_datetime_lenient, AtIdentifier, AtUri, CidString, Datetime, Did, Handle,
    Language, Nsid, RecordKey, SyntaxError, Tid, TidGenerator, Uri,
};
use std::str::FromStr;

/// The cases of one vector file: every line except blank ones and `#`
/// comments, untrimmed (leading and trailing spaces are part of some invalid
/// cases).
fn cases(file: &str) -> Vec<String> {
    let text =
        String::from_utf8(read(&format!("interop/syntax/{file}"))).expect("vector file is UTF-8");
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// A case for a failure message: debug-quoted, long ones shortened.
fn show(case: &str) -> String {
    if case.chars().count() > 80 {
        let head: String = case.chars().take(60).collect();
        format!("{head:?}… ({} bytes)", case.len())
    } else {
        format!("{case:?}")
    }
}

/// Runs `judge` on every case of `file`; `judge` returns why a case is wrong,
/// if it is. Fails listing every wrong case; returns the case count.
fn run(file: &str, judge: impl Fn(&str) -> Option<String>) -> usize {
    let cases = cases(file);
    assert!(!cases.is_empty(), "{file}: no cases");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| judge(c).map(|why| format!("  {}: {why}", show(c))))
        .collect();
    assert!(
        failures.is_empty(),
        "{file}: {} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!("{file}: {} cases", cases.len());
    cases.len()
}

/// Checks that `s` parses as `T`, agrees with `is_valid`, and round-trips.
fn expect_valid<T>(s: &str, is_valid: fn(&str) -> bool) -> Option<String>
where
    T: FromStr<Err = SyntaxError>
        + AsRef<str>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + PartialEq,
{
    let parsed = match s.parse::<T>() {
        Ok(v) => v,
        Err(e) => return Some(format!("rejected: {e}")),
    };
    if !is_valid(s) {
        return Some("parses, but is_valid says false".into());
    }
    if parsed.as_ref() != s {
        return Some(format!("as_str changed it to {:?}", parsed.as_ref()));
    }
    let json = serde_json::to_string(&parsed).ok()?;
    match serde_json::from_str::<T>(&json) {
        Ok(back) if back == parsed => None,
        _ => Some("serde round trip failed".into()),
    }
}

/// Checks that `s` is rejected by `T`'s parser, `is_valid` and serde, with a
/// one-line error.
fn expect_invalid<T>(s: &str, is_valid: fn(&str) -> bool) -> Option<String>
where
    T: FromStr<Err = SyntaxError> + AsRef<str> + serde::de::DeserializeOwned,
{
    let err = match s.parse::<T>() {
        Ok(v) => return Some(format!("accepted as {:?}", show(v.as_ref()))),
        Err(e) => e,
    };
    if is_valid(s) {
        return Some("rejected by the parser, but is_valid says true".into());
    }
    let msg = err.to_string();
    if msg.contains('\n') || msg.len() > 200 || !msg.starts_with("invalid ") {
        return Some(format!("bad error message {msg:?}"));
    }
    let json = serde_json::to_string(s).ok()?;
    serde_json::from_str::<T>(&json)
        .is_ok()
        .then(|| "accepted by serde".into())
}

// ---------------------------------------------------------------- DID

#[test]
fn did_syntax_valid_vectors() {
    run("did_syntax_valid.txt", |s| {
        expect_valid::<Did>(s, Did::is_valid)
    });
}

#[test]
fn did_syntax_invalid_vectors() {
    run("did_syntax_invalid.txt", |s| {
        expect_invalid::<Did>(s, Did::is_valid)
    });
}

// ---------------------------------------------------------------- handle

#[test]
fn handle_syntax_valid_vectors() {
    run("handle_syntax_valid.txt", |s| {
        expect_valid::<Handle>(s, Handle::is_valid).or_else(|| {
            let n = Handle::from_str(s).ok()?.normalize();
            (n.as_str() != s.to_ascii_lowercase()
                || !Handle::is_valid(n.as_str())
                || !n.is_normalized())
            .then(|| format!("bad normalization {n}"))
        })
    });
}

#[test]
fn handle_syntax_invalid_vectors() {
    run("handle_syntax_invalid.txt", |s| {
        expect_invalid::<Handle>(s, Handle::is_valid)
    });
}

// ---------------------------------------------------------------- AT identifier

#[test]
fn atidentifier_syntax_valid_vectors() {
    run("atidentifier_syntax_valid.txt", |s| {
        expect_valid::<AtIdentifier>(s, AtIdentifier::is_valid).or_else(|| {
            let id = AtIdentifier::from_str(s).ok()?;
            (id.as_did().is_some() != s.starts_with("did:"))
                .then(|| "wrong DID/handle dispatch".into())
        })
    });
}

#[test]
fn atidentifier_syntax_invalid_vectors() {
    run("atidentifier_syntax_invalid.txt", |s| {
        expect_invalid::<AtIdentifier>(s, AtIdentifier::is_valid)
    });
}

// ---------------------------------------------------------------- NSID

#[test]
fn nsid_syntax_valid_vectors() {
    run("nsid_syntax_valid.txt", |s| {
        expect_valid::<Nsid>(s, Nsid::is_valid).or_else(|| {
            let n = Nsid::from_str(s).ok()?;
            (format!("{}.{}", n.authority(), n.name()) != s)
                .then(|| "authority + name != input".into())
        })
    });
}

#[test]
fn nsid_syntax_invalid_vectors() {
    run("nsid_syntax_invalid.txt", |s| {
        expect_invalid::<Nsid>(s, Nsid::is_valid)
    });
}

// ---------------------------------------------------------------- AT-URI

#[test]
fn aturi_syntax_valid_vectors() {
    run("aturi_syntax_valid.txt", |s| {
        expect_valid::<AtUri>(s, AtUri::is_valid).or_else(|| {
            let u = AtUri::from_str(s).ok()?;
            let mut rebuilt = format!("at://{}", u.authority());
            for part in [u.collection(), u.rkey()].into_iter().flatten() {
                rebuilt.push('/');
                rebuilt.push_str(part);
            }
            let typed_ok = u.collection().is_none_or(Nsid::is_valid)
                && u.rkey().is_none_or(RecordKey::is_valid);
            (rebuilt != s || !typed_ok || u.authority_id().as_str() != u.authority())
                .then(|| format!("parts do not reassemble: {rebuilt:?}"))
        })
    });
}

#[test]
fn aturi_syntax_invalid_vectors() {
    run("aturi_syntax_invalid.txt", |s| {
        expect_invalid::<AtUri>(s, AtUri::is_valid)
    });
}

// ---------------------------------------------------------------- record key

#[test]
fn recordkey_syntax_valid_vectors() {
    run("recordkey_syntax_valid.txt", |s| {
        expect_valid::<RecordKey>(s, RecordKey::is_valid)
    });
}

#[test]
fn recordkey_syntax_invalid_vectors() {
    run("recordkey_syntax_invalid.txt", |s| {
        expect_invalid::<RecordKey>(s, RecordKey::is_valid)
    });
}

// ---------------------------------------------------------------- TID

#[test]
fn tid_syntax_valid_vectors() {
    run("tid_syntax_valid.txt", |s| {
        expect_valid::<Tid>(s, Tid::is_valid).or_else(|| {
            let t = Tid::from_str(s).ok()?;
            let back = Tid::from_u64(t.to_u64()).ok()?;
            (back != t
                || t.timestamp_micros() != t.to_u64() >> 10
                || u64::from(t.clock_id()) != t.to_u64() & 0x3ff)
                .then(|| format!("integer round trip gave {back}"))
        })
    });
}

#[test]
fn tid_syntax_invalid_vectors() {
    run("tid_syntax_invalid.txt", |s| {
        expect_invalid::<Tid>(s, Tid::is_valid)
    });
}

// ---------------------------------------------------------------- datetime

#[test]
fn datetime_syntax_valid_vectors() {
    run("datetime_syntax_valid.txt", |s| {
        expect_valid::<Datetime>(s, Datetime::is_valid).or_else(|| {
            let dt = Datetime::from_str(s).ok()?;
            if !Datetime::is_valid_syntax(s) {
                return Some("is_valid_syntax says false".into());
            }
            let lenient = parse_datetime_lenient(s);
            (lenient != Some(dt.timestamp_micros())).then(|| {
                format!(
                    "lenient parse {lenient:?} != strict {}",
                    dt.timestamp_micros()
                )
            })
        })
    });
}

#[test]
fn datetime_syntax_invalid_vectors() {
    run("datetime_syntax_invalid.txt", |s| {
        expect_invalid::<Datetime>(s, Datetime::is_valid)
            .or_else(|| Datetime::is_valid_syntax(s).then(|| "is_valid_syntax says true".into()))
    });
}

/// These have the datetime shape but denote no real instant (month 13, minute
/// 99, before year 0 ...): the shape check passes, full validation fails.
#[test]
fn datetime_parse_invalid_vectors() {
    run("datetime_parse_invalid.txt", |s| {
        expect_invalid::<Datetime>(s, Datetime::is_valid).or_else(|| {
            (!Datetime::is_valid_syntax(s)).then(|| "shape check rejected it too".into())
        })
    });
}

// ---------------------------------------------------------------- CID string

#[test]
fn cid_syntax_valid_vectors() {
    run("cid_syntax_valid.txt", |s| {
        expect_valid::<CidString>(s, CidString::is_valid)
    });
}

#[test]
fn cid_syntax_invalid_vectors() {
    run("cid_syntax_invalid.txt", |s| {
        expect_invalid::<CidString>(s, CidString::is_valid)
    });
}

// ---------------------------------------------------------------- language

#[test]
fn language_syntax_valid_vectors() {
    run("language_syntax_valid.txt", |s| {
        expect_valid::<Language>(s, Language::is_valid).or_else(|| {
            (!Language::is_valid_syntax(s)).then(|| "is_valid_syntax says false".into())
        })
    });
}

#[test]
fn language_syntax_invalid_vectors() {
    run("language_syntax_invalid.txt", |s| {
        expect_invalid::<Language>(s, Language::is_valid)
            .or_else(|| Language::is_valid_syntax(s).then(|| "is_valid_syntax says true".into()))
    });
}

/// Well-formed BCP 47 shape but a repeated variant or extension singleton.
#[test]
fn language_parse_invalid_vectors() {
    run("language_parse_invalid.txt", |s| {
        expect_invalid::<Language>(s, Language::is_valid).or_else(|| {
            (!Language::is_valid_syntax(s)).then(|| "shape check rejected it too".into())
        })
    });
}

// ---------------------------------------------------------------- generic URI

#[test]
fn uri_syntax_valid_vectors() {
    run("uri_syntax_valid.txt", |s| {
        expect_valid::<Uri>(s, Uri::is_valid)
            .or_else(|| (!is_valid_uri(s)).then(|| "is_valid_uri says false".into()))
    });
}

#[test]
fn uri_syntax_invalid_vectors() {
    run("uri_syntax_invalid.txt", |s| {
        expect_invalid::<Uri>(s, Uri::is_valid)
            .or_else(|| is_valid_uri(s).then(|| "is_valid_uri says true".into()))
    });
}

// ---------------------------------------------------------------- beyond the vectors

#[test]
fn error_display_is_one_line_with_kind_value_reason() {
    let err = Handle::from_str("foo..bar").expect_err("invalid");
    assert_eq!(err.to_string(), r#"invalid handle "foo..bar": empty label"#);
    let err =
        AtUri::from_str(&format!("at://did:plc:x/{}", "o".repeat(9000))).expect_err("invalid");
    let msg = err.to_string();
    assert!(
        msg.starts_with("invalid AT-URI \"at://did:plc:x/ooo"),
        "{msg}"
    );
    assert!(msg.ends_with("…\": too long (max 8192 chars)"), "{msg}");
    assert_eq!(err.rejected().value().chars().count(), 65);
}

#[test]
fn tid_generator_is_strictly_monotonic() {
    let mut g = TidGenerator::new();
    assert!(g.clock_id() < 1024);
    let mut prev = g.next_tid();
    for _ in 0..20_000 {
        let t = g.next_tid();
        assert!(t > prev, "{t} <= {prev}");
        assert!(t.to_u64() > prev.to_u64());
        assert_eq!(t.clock_id(), g.clock_id());
        prev = t;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    assert!(
        prev.timestamp_micros().abs_diff(now) < 60_000_000,
        "TID time {} vs now {now}",
        prev.timestamp_micros()
    );
}

#[test]
fn tid_generator_never_goes_back() {
    let mut g = TidGenerator::with_clock_id(5);
    let a = g.next_at(1_700_000_000_000_000);
    let b = g.next_at(1_700_000_000_000_000); // clock stalled
    let c = g.next_at(1_600_000_000_000_000); // clock stepped back
    let d = g.next_at(1_800_000_000_000_000); // clock recovered
    assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
    assert_eq!(b.timestamp_micros(), 1_700_000_000_000_001);
    assert_eq!(c.timestamp_micros(), 1_700_000_000_000_002);
    assert_eq!(d.timestamp_micros(), 1_800_000_000_000_000);
    assert!([&a, &b, &c, &d].iter().all(|t| t.clock_id() == 5));
    assert_eq!(TidGenerator::with_clock_id(0xffff).clock_id(), 1023);
}

#[test]
fn tid_integer_values() {
    assert_eq!(
        Tid::from_u64(0).expect("in range").as_str(),
        "2222222222222"
    );
    assert_eq!(
        Tid::from_u64((1 << 63) - 1).expect("in range").as_str(),
        "bzzzzzzzzzzzz"
    );
    assert!(Tid::from_u64(1 << 63).is_err());
    let t = Tid::from_parts(1_700_000_000_123_456, 1023).expect("in range");
    assert_eq!(
        (t.timestamp_micros(), t.clock_id()),
        (1_700_000_000_123_456, 1023)
    );
    assert_eq!(t.to_u64(), (1_700_000_000_123_456 << 10) | 1023);
    assert!(Tid::from_parts(1 << 53, 0).is_err());
    assert!(Tid::from_parts(0, 1024).is_err());
}

proptest! {
    #[test]
    fn tid_u64_round_trip(x in 0u64..(1 << 63)) {
        let t = Tid::from_u64(x).expect("in range");
        prop_assert!(Tid::is_valid(t.as_str()), "{}", t);
        prop_assert_eq!(t.to_u64(), x);
        prop_assert_eq!(t.as_str().parse::<Tid>().expect("valid"), t);
    }

    #[test]
    fn tid_string_order_is_integer_order(x in 0u64..(1 << 63), y in 0u64..(1 << 63)) {
        let (a, b) = (Tid::from_u64(x).expect("in range"), Tid::from_u64(y).expect("in range"));
        prop_assert_eq!(a.as_str().cmp(b.as_str()), x.cmp(&y));
        prop_assert_eq!(a.cmp(&b), x.cmp(&y));
    }

    #[test]
    fn tid_generator_monotonic_under_any_clock(clock in proptest::collection::vec(0u64..(1 << 52), 1..300)) {
        let mut g = TidGenerator::with_clock_id(9);
        let mut prev: Option<Tid> = None;
        for now in clock {
            let t = g.next_at(now);
            if let Some(p) = &prev {
                prop_assert!(&t > p, "{} <= {}", t, p);
            }
            prev = Some(t);
        }
    }

    #[test]
    fn datetime_micros_format_round_trip(micros in -62_167_219_200_000_000i64..253_402_300_800_000_000) {
        let dt = Datetime::from_timestamp_micros(micros).expect("in range");
        prop_assert_eq!(dt.timestamp_micros(), micros);
        let reparsed: Datetime = dt.as_str().parse().expect("valid");
        prop_assert_eq!(reparsed.timestamp_micros(), micros);
        prop_assert_eq!(parse_datetime_lenient(dt.as_str()), Some(micros));
    }
}

#[test]
fn aturi_accessors() {
    let u =
        AtUri::from_str("at://did:plc:asdf123/com.atproto.feed.post/3jzfcijpj2z2a").expect("valid");
    assert_eq!(u.authority(), "did:plc:asdf123");
    assert!(u.authority_is_did());
    assert_eq!(u.collection(), Some("com.atproto.feed.post"));
    assert_eq!(u.rkey(), Some("3jzfcijpj2z2a"));
    assert_eq!(
        u.authority_id(),
        AtIdentifier::Did(Did::from_str("did:plc:asdf123").expect("valid"))
    );

    let u = AtUri::from_str("at://User.Bsky.Social/app.bsky.feed.like").expect("valid");
    assert_eq!(u.authority(), "User.Bsky.Social");
    assert!(!u.authority_is_did());
    assert_eq!(u.collection(), Some("app.bsky.feed.like"));
    assert_eq!(u.rkey(), None);

    let u = AtUri::from_str("at://did:web:localhost%3A1234").expect("valid");
    assert_eq!(u.authority(), "did:web:localhost%3A1234");
    assert_eq!((u.collection(), u.rkey()), (None, None));

    let did = Did::from_str("did:plc:abc").expect("valid");
    let nsid = Nsid::from_str("app.bsky.feed.post").expect("valid");
    let rkey = RecordKey::from_str("self").expect("valid");
    let rec = AtUri::record(&did, &nsid, &rkey);
    assert_eq!(rec.as_str(), "at://did:plc:abc/app.bsky.feed.post/self");
    let auth = AtIdentifier::from(did);
    assert_eq!(
        AtUri::from_parts(&auth, Some(&nsid), Some(&rkey)).expect("valid"),
        rec
    );
    assert!(AtUri::from_parts(&auth, None, Some(&rkey)).is_err());
}

#[test]
fn datetime_micros_values() {
    let micros = |s: &str| {
        Datetime::from_str(s)
            .unwrap_or_else(|e| panic!("{e}"))
            .timestamp_micros()
    };
    assert_eq!(micros("1970-01-01T00:00:00Z"), 0);
    assert_eq!(micros("1970-01-01T00:00:00.000001Z"), 1);
    assert_eq!(micros("1969-12-31T23:59:59.999999Z"), -1);
    // 2024-02-29T10:00:00.123456Z: leap day, offset applied.
    assert_eq!(
        micros("2024-02-29T12:00:00.123456+02:00"),
        1_709_200_800_123_456
    );
    assert_eq!(micros("1985-04-12T23:20:50.123Z"), 482_196_050_123_000);
    assert_eq!(micros("1985-04-12T16:20:50.123-07:00"), 482_196_050_123_000);
    // Digits beyond microseconds are truncated.
    assert_eq!(
        micros("1985-04-12T23:20:50.1234567899Z"),
        482_196_050_123_456
    );
    assert_eq!(micros("0000-01-01T00:00:00.000Z"), -62_167_219_200_000_000);
    assert_eq!(
        micros("9999-12-31T23:59:59.999999Z"),
        253_402_300_799_999_999
    );
    assert!(!Datetime::is_valid("2023-02-29T00:00:00Z"));
    assert!(!Datetime::is_valid("1900-02-29T00:00:00Z"));
    assert!(Datetime::is_valid("2000-02-29T00:00:00Z"));
    assert!(!Datetime::is_valid("2024-01-01T24:00:00Z"));
    assert!(!Datetime::is_valid("2024-06-30T23:59:60Z"));
    assert_eq!(
        Datetime::from_timestamp_micros(1_709_200_800_123_456)
            .expect("in range")
            .as_str(),
        "2024-02-29T10:00:00.123456Z"
    );
}

#[test]
fn datetime_lenient_parsing() {
    let want = Datetime::from_str("2023-11-05T13:15:30.250Z")
        .expect("valid")
        .timestamp_micros();
    for s in [
        "2023-11-05T13:15:30.250Z",
        "2023-11-05T13:15:30.250",  // no timezone: UTC
        "2023-11-05t13:15:30.250z", // lowercase
        "2023-11-05 13:15:30.250",  // space separator
        "2023-11-05 13:15:30.250Z",
        " 2023-11-05T13:15:30.250Z\n",
        "2023-11-05T13:15:30.250-00:00",
        "2023-11-05T14:15:30.250+0100",
        "2023-11-05T12:15:30.250-01",
        "2023-11-05T13:15:30,250 UTC",
        "2023-11-05T13:15:30.250 GMT",
        "2023-11-05T13:15:30.250 +00:00",
        "2023-11-05T13:15:30.250 z",
        "2023-11-05T13:15:30.250+00",
        "2023-11-5T13:15:30.250Z", // one-digit day
        "2023-11-05T13:15:30.2500001Z",
    ] {
        assert_eq!(parse_datetime_lenient(s), Some(want), "{s:?}");
    }
    assert_eq!(
        parse_datetime_lenient("2023-11-05"),
        Some(want - (13 * 3600 + 15 * 60 + 30) * 1_000_000 - 250_000)
    );
    assert_eq!(
        parse_datetime_lenient("2023-11-05T13:15"),
        Some(want - 30_250_000)
    );
    // A leap second rolls into the next minute.
    assert_eq!(
        parse_datetime_lenient("2016-12-31T23:59:60Z"),
        Some(
            Datetime::from_str("2017-01-01T00:00:00Z")
                .expect("valid")
                .timestamp_micros()
        )
    );
    for bad in [
        "",
        "now",
        "2023-13-05T13:15:30Z",
        "2023-11-31T13:15:30Z",
        "2023-02-29T13:15:30Z",
        "2023-11-05T25:15:30Z",
        "2023-11-05T13:15:30+25:00",
        "2023-11-05T13:15:30.Z",
        "2023-11-05T13:15:30ZZ",
        "2023-11-05T13:15:30 PST",
        "23-11-05T13:15:30Z",
        "2023-11-05T13",
        "1699190130",
    ] {
        assert_eq!(parse_datetime_lenient(bad), None, "{bad:?}");
    }
}

#[test]
fn handle_normalization_and_reserved_tlds() {
    let h = Handle::from_str("Alice.EXAMPLE.com").expect("valid");
    assert!(!h.is_normalized());
    assert_eq!(h.normalize().as_str(), "alice.example.com");
    assert!(Handle::from_str("laptop.local")
        .expect("valid")
        .has_disallowed_tld());
    assert!(Handle::from_str("x.Onion")
        .expect("valid")
        .has_disallowed_tld());
    assert!(!Handle::from_str("alice.bsky.social")
        .expect("valid")
        .has_disallowed_tld());
}
