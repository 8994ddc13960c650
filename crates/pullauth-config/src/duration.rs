//! Durations exactly as Go's `time.ParseDuration` reads them, since the ECS
//! agent reads its `*_DURATION` and `*_TIMEOUT` variables that way: an
//! optional sign, then one or more decimal numbers (fractions allowed:
//! `1.5h`, `.5s`, `5.s`) each followed by a unit (`ns`, `us`, `µs`, `μs`,
//! `ms`, `s`, `m`, `h`), as in `1h30m`; `0` alone needs no unit. No spaces,
//! no other units (`2days`, `1d`), and the total must fit Go's signed
//! 64-bit nanoseconds.
//!
//! The arithmetic follows Go's, down to the float64 step that scales a
//! fraction, so that every value means to pullauth what it means to the
//! ECS agent (the table tests are Go's own cases).

use std::fmt;

/// A duration as Go holds it: signed nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub i64);

/// Why a text is not a Go duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    /// Not the grammar (empty, a number without a unit, no digits).
    Invalid,
    /// A unit Go does not know (`d`, `days`, `sec`).
    UnknownUnit,
    /// Beyond Go's range (about 292 years either way).
    Overflow,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DurationError::Invalid => "not a duration",
            DurationError::UnknownUnit => "unknown unit (use ns, us, ms, s, m or h)",
            DurationError::Overflow => "too large",
        })
    }
}

impl std::error::Error for DurationError {}

/// `1 << 63`, the magnitude of Go's most negative duration.
const LIMIT: u64 = 1 << 63;

fn unit(name: &[u8]) -> Option<u64> {
    Some(match name {
        b"ns" => 1,
        b"us" => 1_000,
        // U+00B5 (micro sign) and U+03BC (Greek small letter mu).
        [0xC2, 0xB5, b's'] | [0xCE, 0xBC, b's'] => 1_000,
        b"ms" => 1_000_000,
        b"s" => 1_000_000_000,
        b"m" => 60_000_000_000,
        b"h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// The leading digits of `s` as an integer, and the rest.
fn leading_int(s: &[u8]) -> Result<(u64, &[u8]), DurationError> {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut x: u64 = 0;
    for &c in &s[..digits] {
        if x > LIMIT / 10 {
            return Err(DurationError::Overflow);
        }
        x = x * 10 + u64::from(c - b'0');
        if x > LIMIT {
            return Err(DurationError::Overflow);
        }
    }
    Ok((x, &s[digits..]))
}

/// The leading digits of `s` as a fraction `x / scale` (digits past what
/// fits are read and ignored), and the rest.
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let (mut x, mut scale, mut overflow) = (0u64, 1f64, false);
    for &c in &s[..digits] {
        if overflow {
            continue;
        }
        if x > (LIMIT - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > LIMIT {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[digits..])
}

impl std::str::FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<GoDuration, DurationError> {
        let mut s = text.as_bytes();
        let mut negative = false;
        if let Some((&sign @ (b'-' | b'+'), rest)) = s.split_first() {
            negative = sign == b'-';
            s = rest;
        }
        if s == b"0" {
            return Ok(GoDuration(0));
        }
        if s.is_empty() {
            return Err(DurationError::Invalid);
        }
        let mut total: u64 = 0;
        while !s.is_empty() {
            if !(s[0] == b'.' || s[0].is_ascii_digit()) {
                return Err(DurationError::Invalid);
            }
            let before = s.len();
            let (mut v, rest) = leading_int(s)?;
            let whole = rest.len() != before;
            s = rest;
            let (mut fraction, mut scale, mut has_fraction) = (0, 1.0, false);
            if let Some((b'.', rest)) = s.split_first() {
                let before = rest.len();
                let (f, sc, rest) = leading_fraction(rest);
                (fraction, scale, has_fraction) = (f, sc, rest.len() != before);
                s = rest;
            }
            if !whole && !has_fraction {
                return Err(DurationError::Invalid);
            }
            let name_len = s
                .iter()
                .take_while(|&&c| c != b'.' && !c.is_ascii_digit())
                .count();
            if name_len == 0 {
                return Err(DurationError::Invalid);
            }
            let unit = unit(&s[..name_len]).ok_or(DurationError::UnknownUnit)?;
            s = &s[name_len..];
            if v > LIMIT / unit {
                return Err(DurationError::Overflow);
            }
            v *= unit;
            if fraction > 0 {
                // Go: v += uint64(float64(f) * (float64(unit) / scale)).
                v += (fraction as f64 * (unit as f64 / scale)) as u64;
                if v > LIMIT {
                    return Err(DurationError::Overflow);
                }
            }
            total = total.checked_add(v).ok_or(DurationError::Overflow)?;
            if total > LIMIT {
                return Err(DurationError::Overflow);
            }
        }
        if negative {
            // total <= 1 << 63, so its negation fits.
            return Ok(GoDuration((total as i128).wrapping_neg() as i64));
        }
        i64::try_from(total)
            .map(GoDuration)
            .map_err(|_| DurationError::Overflow)
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const NS: i64 = 1;
    const US: i64 = 1_000;
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    /// Go's parseDurationTests (src/time/time_test.go), case for case.
    #[rstest]
    #[case("0", 0)]
    #[case("5s", 5 * S)]
    #[case("30s", 30 * S)]
    #[case("1478s", 1478 * S)]
    #[case("-5s", -5 * S)]
    #[case("+5s", 5 * S)]
    #[case("-0", 0)]
    #[case("+0", 0)]
    #[case("5.0s", 5 * S)]
    #[case("5.6s", 5 * S + 600 * MS)]
    #[case("5.s", 5 * S)]
    #[case(".5s", 500 * MS)]
    #[case("1.0s", S)]
    #[case("1.00s", S)]
    #[case("1.004s", S + 4 * MS)]
    #[case("1.0040s", S + 4 * MS)]
    #[case("100.00100s", 100 * S + MS)]
    #[case("10ns", 10 * NS)]
    #[case("11us", 11 * US)]
    #[case("12µs", 12 * US)]
    #[case("12μs", 12 * US)]
    #[case("13ms", 13 * MS)]
    #[case("14s", 14 * S)]
    #[case("15m", 15 * M)]
    #[case("16h", 16 * H)]
    #[case("3h30m", 3 * H + 30 * M)]
    #[case("10.5s4m", 4 * M + 10 * S + 500 * MS)]
    #[case("-2m3.4s", -(2 * M + 3 * S + 400 * MS))]
    #[case("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS)]
    #[case("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS)]
    #[case("52763797000ns", 52_763_797_000 * NS)]
    #[case("0.3333333333333333333h", 20 * M)]
    #[case("9007199254740993ns", (1 << 53) + 1)]
    #[case("9223372036854775807ns", i64::MAX)]
    #[case("9223372036854775.807us", i64::MAX)]
    #[case("9223372036s854ms775us807ns", i64::MAX)]
    #[case("-9223372036854775808ns", i64::MIN)]
    #[case("-9223372036854775.808us", i64::MIN)]
    #[case("-9223372036s854ms775us808ns", i64::MIN)]
    #[case("-2562047h47m16.854775808s", i64::MIN)]
    #[case("0.100000000000000000000h", 6 * M)]
    #[case("0.830103483285477580700h", 49 * M + 48 * S + 372_539_827 * NS)]
    fn parses_as_go_does(#[case] text: &str, #[case] nanos: i64) {
        assert_eq!(text.parse::<GoDuration>(), Ok(GoDuration(nanos)), "{text}");
    }

    /// Go's parseDurationErrorTests, plus what pullauth once accepted.
    #[rstest]
    #[case("", DurationError::Invalid)]
    #[case("3", DurationError::Invalid)]
    #[case("-", DurationError::Invalid)]
    #[case("s", DurationError::Invalid)]
    #[case(".", DurationError::Invalid)]
    #[case("-.", DurationError::Invalid)]
    #[case(".s", DurationError::Invalid)]
    #[case("+.s", DurationError::Invalid)]
    #[case("1d", DurationError::UnknownUnit)]
    #[case("\u{85}\u{85}", DurationError::Invalid)]
    #[case("hello \u{ff}ff world", DurationError::Invalid)]
    #[case("\u{FFFD}", DurationError::Invalid)]
    #[case("\u{FFFD} hello \u{FFFD} world", DurationError::Invalid)]
    #[case("9223372036854775810ns", DurationError::Overflow)]
    #[case("9223372036854775808ns", DurationError::Overflow)]
    #[case("-9223372036854775809ns", DurationError::Overflow)]
    #[case("9223372036854776us", DurationError::Overflow)]
    #[case("3000000h", DurationError::Overflow)]
    #[case("9223372036854775.808us", DurationError::Overflow)]
    #[case("9223372036854ms775us808ns", DurationError::Overflow)]
    // humantime accepted these; Go (and so the ECS agent) does not.
    #[case("2days", DurationError::UnknownUnit)]
    #[case("1 h", DurationError::UnknownUnit)]
    #[case("1h 30m", DurationError::UnknownUnit)]
    #[case("5sec", DurationError::UnknownUnit)]
    #[case(" 5s", DurationError::Invalid)]
    #[case("5s ", DurationError::UnknownUnit)]
    #[case("1H", DurationError::UnknownUnit)]
    fn refuses_what_go_refuses(#[case] text: &str, #[case] error: DurationError) {
        assert_eq!(text.parse::<GoDuration>(), Err(error), "{text:?}");
    }
}
