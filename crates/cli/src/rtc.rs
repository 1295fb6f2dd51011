//! `-rtc [base=utc|localtime|DATE][,clock=host|rt|vm][,driftfix=none|slew]`.
//! DATE is `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS` (UTC).

use crate::builder::{Builder, Inv};
use crate::config::{RtcBase, RtcClock, RtcDriftfix};
use crate::error::CliError;
use crate::schema::{key, Kind, Schema};
use crate::table::Parsed;

pub(crate) const RTC_SCHEMA: Schema = Schema {
    implied: None,
    keys: &[
        key("base", Kind::Str),
        key("clock", Kind::Enum(RtcClock::NAMES)),
        key("driftfix", Kind::Enum(RtcDriftfix::NAMES)),
    ],
    warn_flags: true,
    open: false,
};

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn num(s: &str, len: usize) -> Option<i64> {
    (s.len() == len && s.bytes().all(|c| c.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Parse a `-rtc base=` date to seconds since the epoch.
pub(crate) fn parse_datetime(s: &str) -> Option<i64> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() || !(1..=12).contains(&m) || day < 1 || day > days_in_month(y, m) {
        return None;
    }
    let (hh, mm, ss) = match time {
        None => (0, 0, 0),
        Some(t) => {
            let mut t = t.split(':');
            let v = (num(t.next()?, 2)?, num(t.next()?, 2)?, num(t.next()?, 2)?);
            if t.next().is_some() || v.0 > 23 || v.1 > 59 || v.2 > 59 {
                return None;
            }
            v
        }
    };
    Some(days_from_civil(y, m, day) * 86400 + hh * 3600 + mm * 60 + ss)
}

pub(crate) fn handle_rtc(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let o = p.opts();
    let rtc = &mut b.cfg.rtc;
    if let Some(base) = o.str("base") {
        rtc.base = match base {
            "utc" => RtcBase::Utc,
            "localtime" => RtcBase::Localtime,
            d => RtcBase::Datetime(parse_datetime(d).ok_or_else(|| {
                inv.err(format!(
                    "invalid datetime format '{d}'; valid formats: '2006-06-17T16:01:21' or '2006-06-17'"
                ))
            })?),
        };
    }
    // The schema has checked both against the enums' names.
    if let Some(c) = o.str("clock").and_then(|c| c.parse().ok()) {
        rtc.clock = c;
    }
    if let Some(d) = o.str("driftfix").and_then(|d| d.parse().ok()) {
        rtc.driftfix = d;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_datetime("1970-01-01"), Some(0));
        assert_eq!(parse_datetime("2006-06-17"), Some(1150502400));
        assert_eq!(parse_datetime("2006-06-17T16:01:21"), Some(1150560081));
        assert_eq!(parse_datetime("2000-02-29"), Some(951782400));
        assert_eq!(parse_datetime("1969-12-31T23:59:59"), Some(-1));
        for bad in [
            "",
            "2006-13-17",
            "2006-02-30",
            "1900-02-29",
            "2006-06-17T16:01",
            "2006-06-17T24:00:00",
            "06-06-17",
            "2006-6-17",
            "2006-06-17x",
            "now",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }
}
