//! Query strings as both faces read them (the API's lists, the dashboard's filters and CSV):
//! parameters of known names, each at most once, parsed into list parameters and a payment filter
//! with a precise complaint (the error object) when one is wrong.

use super::domain::{day_start, from_unix, parse_day, parse_status, Cursor, ListParams, PaymentFilter, MAX_UNIX};
use super::error::ApiError;
use super::ids;

/// Query parameters of known names, each at most once.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

/// A form's query: empty values count as absent, as an HTML form sends every field of a filter
/// whether it was filled in or not.
pub fn parse_query(raw: &str, allowed: &[&str]) -> Result<Query, ApiError> {
    let mut query = parse_api_query(raw, allowed)?;
    query.0.retain(|(_, v)| !v.is_empty());
    Ok(query)
}

/// An API caller's query: a parameter given empty is given, and judged (`limit=` is no number).
pub fn parse_api_query(raw: &str, allowed: &[&str]) -> Result<Query, ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|e| ApiError::invalid("parameter_invalid", format!("The query string is malformed: {e}.")))?;
    for (i, (name, _)) in pairs.iter().enumerate() {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::unknown(name));
        }
        if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
            return Err(ApiError::bad_value(name, "it is given more than once"));
        }
    }
    Ok(Query(pairs))
}

impl Query {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// An integer parameter: digits, with an optional minus sign; nothing else.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(raw) = self.get(name) else { return Ok(None) };
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::not_integer(name));
        }
        raw.parse().map(Some).map_err(|_| ApiError::bad_value(name, "it is out of range"))
    }

    pub fn list(&self, default_limit: i64) -> Result<ListParams, ApiError> {
        let limit = match self.int("limit")? {
            None => default_limit,
            Some(n) if (1..=100).contains(&n) => n,
            Some(_) => return Err(ApiError::bad_value("limit", "it must be between 1 and 100")),
        };
        let cursor = match (self.get("starting_after"), self.get("ending_before")) {
            (Some(_), Some(_)) => return Err(ApiError::bad_value("ending_before", "starting_after and ending_before cannot be used together")),
            (Some(after), None) => Some(Cursor::After(after.to_string())),
            (None, Some(before)) => Some(Cursor::Before(before.to_string())),
            (None, None) => None,
        };
        Ok(ListParams { limit, cursor })
    }

    pub fn payment_filter(&self) -> Result<PaymentFilter, ApiError> {
        let mut filter = PaymentFilter {
            customer: self.get("customer").map(str::to_string),
            user: self.get("user").map(|raw| ids::USER.parse(raw).ok_or_else(|| ApiError::missing_resource("user", Some("user")))).transpose()?,
            reference: self.get("reference").map(|r| uuid::Uuid::parse_str(r).ok()),
            status: match self.get("status") {
                None => None,
                Some(raw) => Some(parse_status(raw).ok_or_else(|| {
                    ApiError::bad_value("status", "it must be one of pending, processing, completed, failed, requires_confirmation")
                })?),
            },
            amount_gte: self.int("amount[gte]")?,
            amount_lte: self.int("amount[lte]")?,
            ..PaymentFilter::default()
        };
        let at = |name: &str, shift: i64| -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
            match self.int(name)? {
                None => Ok(None),
                Some(t) if (0..=MAX_UNIX).contains(&t) => Ok(from_unix(t + shift)),
                Some(_) => Err(ApiError::bad_value(name, &format!("it must be a Unix time from 0 to {MAX_UNIX}"))),
            }
        };
        if let Some(t) = at("created[gt]", 1)? {
            filter.from(t);
        }
        if let Some(t) = at("created[gte]", 0)? {
            filter.from(t);
        }
        if let Some(t) = at("created[lt]", 0)? {
            filter.before(t);
        }
        if let Some(t) = at("created[lte]", 1)? {
            filter.before(t);
        }
        let day = |name: &str| -> Result<Option<chrono::NaiveDate>, ApiError> {
            self.get(name).map(|raw| parse_day(raw).ok_or_else(|| ApiError::bad_value(name, "it must be a date such as 2026-11-24"))).transpose()
        };
        if let Some(from) = day("from")? {
            filter.from(day_start(from));
        }
        if let Some(to) = day("to")? {
            let next = to.succ_opt().ok_or_else(|| ApiError::bad_value("to", "it is too far in the future"))?;
            filter.before(day_start(next));
        }
        Ok(filter)
    }
}

pub const FILTER_PARAMS: [&str; 12] = [
    "customer", "user", "reference", "status", "created[gt]", "created[gte]", "created[lt]", "created[lte]", "from", "to",
    "amount[gte]", "amount[lte]",
];
pub const LIST_PARAMS: [&str; 3] = ["limit", "starting_after", "ending_before"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_whole_numbers_only() {
        let query = parse_query("limit=10.5", &["limit"]).unwrap();
        assert_eq!(query.int("limit").unwrap_err().code, "parameter_invalid_integer");
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert_eq!(parse_query("colour=red", &LIST_PARAMS).unwrap_err().param.as_deref(), Some("colour"));
        assert_eq!(parse_query("limit=1&limit=2", &LIST_PARAMS).unwrap_err().code, "parameter_invalid");
        let q = parse_query("created%5Bgt%5D=100&to=2026-01-01", &FILTER_PARAMS).unwrap();
        let f = q.payment_filter().unwrap();
        assert_eq!(f.created_from, from_unix(101));
        assert_eq!(f.created_before.unwrap().to_rfc3339(), "2026-01-02T00:00:00+00:00");
    }
}
