//! What the merchants' API and dashboard accept, parsed once at the edge: bounds on amounts, list
//! parameters and payment filters (money itself is `payments::Money`).

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

use crate::payments::PaymentStatus;

pub const MIN_PAYMENT: i64 = 50;
/// The longest name a customer may have, in characters.
pub const NAME_MAX: usize = 200;

/// What a staff member may do at a merchant: owners manage its staff and details; members see
/// its money and refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Member,
}

impl Role {
    pub fn parse(raw: &str) -> Option<Role> {
        match raw {
            "owner" => Some(Role::Owner),
            "member" => Some(Role::Member),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }
}
/// The last second of 9999: the latest Unix time a filter takes.
pub const MAX_UNIX: i64 = 253_402_300_799;
pub const MAX_PAYMENT: i64 = 99_999_999;

pub fn unix(at: DateTime<Utc>) -> i64 {
    at.timestamp()
}

pub fn from_unix(seconds: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(seconds, 0).single()
}

/// A UTC day: `YYYY-MM-DD`.
/// A day written `YYYY-MM-DD`, digits exactly there.
pub fn parse_day(raw: &str) -> Option<NaiveDate> {
    let shaped = raw.len() == 10 && raw.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    shaped.then(|| NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()).flatten()
}

pub fn day_start(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

/// Which payments a list shows. Every bound is optional; all are ANDed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaymentFilter {
    /// The customer as the caller named it (`cus_…`), resolved against their links.
    pub customer: Option<String>,
    /// The paying user, by the id callers know them by.
    pub user: Option<Uuid>,
    /// `Some(None)`: a reference was asked for that cannot exist (malformed): nothing matches.
    pub reference: Option<Option<Uuid>>,
    pub status: Option<PaymentStatus>,
    /// Inclusive lower and exclusive upper bound on `created`.
    pub created_from: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub amount_gte: Option<i64>,
    pub amount_lte: Option<i64>,
}

impl PaymentFilter {
    /// Narrows the lower bound on `created` (several parameters may set it).
    pub fn from(&mut self, at: DateTime<Utc>) {
        self.created_from = Some(self.created_from.map_or(at, |t| t.max(at)));
    }

    pub fn before(&mut self, at: DateTime<Utc>) {
        self.created_before = Some(self.created_before.map_or(at, |t| t.min(at)));
    }
}

/// Where a page starts: after (older than) or before (newer than) a visible object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    After(String),
    Before(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListParams {
    pub limit: i64,
    pub cursor: Option<Cursor>,
}

/// Statuses a payment filter accepts, by their API names.
pub fn parse_status(raw: &str) -> Option<PaymentStatus> {
    raw.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_strict_dates() {
        assert!(parse_day("2026-11-24").is_some());
        assert!(parse_day("2026-2-4").is_none());
        assert!(parse_day("2026-13-01").is_none());
    }

    #[test]
    fn created_bounds_narrow_and_never_widen() {
        let mut f = PaymentFilter::default();
        f.from(from_unix(100).unwrap());
        f.from(from_unix(50).unwrap());
        f.before(from_unix(500).unwrap());
        f.before(from_unix(900).unwrap());
        assert_eq!((f.created_from, f.created_before), (from_unix(100), from_unix(500)));
    }
}
