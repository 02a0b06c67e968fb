//! What to answer for a `Range` header (API.md "Ranges"): one satisfiable
//! range → 206; none satisfiable → 416; syntactically invalid, several
//! ranges, or no header → 200 with the whole object. Parsing is
//! `http-range-header`'s; the policy is ours.

/// The answer a `Range` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    Full,
    /// Inclusive byte positions.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

pub fn decide(header: Option<&str>, len: u64) -> RangeAnswer {
    let Some(value) = header else {
        return RangeAnswer::Full;
    };
    if is_empty_suffix(value) {
        // `bytes=-0` asks for the last zero bytes: well-formed, never
        // satisfiable (RFC 9110 §14.1.3); the parser calls it malformed.
        return RangeAnswer::Unsatisfiable;
    }
    if has_backwards_spec(value) {
        // `bytes=5-3` is invalid syntax (last-pos < first-pos): ignored.
        return RangeAnswer::Full;
    }
    let Ok(parsed) = http_range_header::parse_range_header(value) else {
        return RangeAnswer::Full;
    };
    if parsed.ranges.len() != 1 {
        return RangeAnswer::Full;
    }
    if len == 0 {
        // No byte of an empty object can be asked for (the parser would
        // answer 0-0).
        return RangeAnswer::Unsatisfiable;
    }
    // `bytes=-N` with N past the start asks for the whole object (RFC 9110
    // §14.1.3); the parser calls it out of bounds.
    if let [http_range_header::SyntacticallyCorrectRange {
        start: http_range_header::StartPosition::FromLast(n),
        ..
    }] = parsed.ranges.as_slice()
    {
        if *n >= len {
            return RangeAnswer::Partial {
                start: 0,
                end: len - 1,
            };
        }
    }
    match parsed.validate(len) {
        Ok(ranges) => match ranges.as_slice() {
            [r] => RangeAnswer::Partial {
                start: *r.start(),
                end: *r.end(),
            },
            _ => RangeAnswer::Full,
        },
        Err(_) => RangeAnswer::Unsatisfiable,
    }
}

fn has_backwards_spec(value: &str) -> bool {
    let Some(specs) = value.trim().strip_prefix("bytes=") else {
        return false;
    };
    specs
        .split(',')
        .any(|spec| match spec.trim().split_once('-') {
            Some((a, b)) => matches!((a.parse::<u64>(), b.parse::<u64>()), (Ok(a), Ok(b)) if b < a),
            None => false,
        })
}

fn is_empty_suffix(value: &str) -> bool {
    value
        .trim()
        .strip_prefix("bytes=")
        .and_then(|s| s.trim().strip_prefix('-'))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b == b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use RangeAnswer::*;

    #[test]
    fn the_range_table() {
        let len = 100;
        let cases: &[(Option<&str>, RangeAnswer)] = &[
            (None, Full),
            (Some("bytes=0-0"), Partial { start: 0, end: 0 }),
            (Some("bytes=0-"), Partial { start: 0, end: 99 }),
            (Some("bytes=-1"), Partial { start: 99, end: 99 }),
            (Some("bytes=-1000"), Partial { start: 0, end: 99 }),
            (Some("bytes=10-19"), Partial { start: 10, end: 19 }),
            (Some("bytes=90-200"), Partial { start: 90, end: 99 }),
            (Some("bytes=100-"), Unsatisfiable),
            (Some("bytes=200-300"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=5-3"), Full),
            (Some("bytes=0-1,5-6"), Full),
            (Some("garbage"), Full),
            (Some("items=0-1"), Full),
        ];
        for (header, want) in cases {
            assert_eq!(decide(*header, len), *want, "{header:?}");
        }
        assert_eq!(
            decide(Some("bytes=0-"), 0),
            Unsatisfiable,
            "nothing to serve in an empty object"
        );
    }

    proptest! {
        #[test]
        fn any_header_gives_a_range_inside_the_object(header in "\\PC{0,40}", len in 0u64..10_000) {
            match decide(Some(&header), len) {
                Partial { start, end } => prop_assert!(start <= end && end < len),
                Full | Unsatisfiable => {}
            }
        }

        #[test]
        fn well_formed_ranges_are_honoured(a in 0u64..1000, n in 1u64..1000, len in 1u64..2000) {
            let header = format!("bytes={a}-{}", a + n - 1);
            let got = decide(Some(&header), len);
            if a < len {
                prop_assert_eq!(got, Partial { start: a, end: (a + n - 1).min(len - 1) });
            } else {
                prop_assert_eq!(got, Unsatisfiable);
            }
        }
    }
}
