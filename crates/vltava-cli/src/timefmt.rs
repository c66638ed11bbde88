//! Date-times for `group reset-offsets --to-datetime`: `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]`
//! (Kafka's tool takes the same shape). Without a zone the time is UTC: scripts get the
//! same answer on every machine.

/// Milliseconds since the Unix epoch of an ISO-8601 date-time.
pub fn parse_datetime_ms(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid date-time '{s}': expected YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM]");
    let b = s.as_bytes();
    if !s.is_ascii()
        || b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
    {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let part = &s[r];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        // Keep milliseconds; finer digits are cut, as Kafka's parser does.
        let ms_digits = &frac[..digits.min(3)];
        millis =
            ms_digits.parse::<i64>().map_err(|_| bad())? * 10i64.pow(3 - ms_digits.len() as u32);
        rest = &frac[digits..];
    }
    let offset_minutes = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad()),
            };
            let zone = rest[1..].replace(':', "");
            if zone.len() != 4 || !zone.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            let (h, m): (i64, i64) = (zone[..2].parse().unwrap(), zone[2..].parse().unwrap());
            if h > 23 || m > 59 {
                return Err(bad());
            }
            sign * (h * 60 + m)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1_000 + millis)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_datetime_ms("2024-01-01T00:00:00Z"),
            Ok(1_704_067_200_000)
        );
        assert_eq!(
            parse_datetime_ms("2024-02-29T12:34:56.789Z"),
            Ok(1_709_210_096_789)
        );
        assert_eq!(
            parse_datetime_ms("2024-01-01T02:00:00+02:00"),
            Ok(1_704_067_200_000)
        );
        assert_eq!(
            parse_datetime_ms("2023-12-31T19:00:00-0500"),
            Ok(1_704_067_200_000)
        );
        assert_eq!(
            parse_datetime_ms("2024-01-01T00:00:00"),
            Ok(1_704_067_200_000),
            "no zone means UTC"
        );
        assert_eq!(
            parse_datetime_ms("2024-01-01T00:00:00.5Z"),
            Ok(1_704_067_200_500)
        );
        assert_eq!(parse_datetime_ms("1969-12-31T23:59:59Z"), Ok(-1_000));
    }

    #[test]
    fn rejects_nonsense() {
        for s in [
            "",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00+2",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00 UTC",
            "yesterday",
        ] {
            assert!(parse_datetime_ms(s).is_err(), "{s}");
        }
    }
}
