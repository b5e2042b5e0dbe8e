//! Values a payment is made of, parsed once at the edge so the rest of the code can trust them.

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use std::fmt;
use std::str::FromStr;


/// The key that makes paying an order idempotent inside Agora. It is derived from who pays for
/// what, so every retry of the same intent — a double click, a resubmitted form, a re-run job —
/// finds the same payment. It is unique in one database only: the gateway sees `gateway_key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn for_order(user_id: i64, order_id: i64) -> IdempotencyKey {
        IdempotencyKey(format!("payment_{user_id}_{order_id}"))
    }

    /// Accepts a key that arrives from outside (a gateway's API): printable ASCII, 1 to 255 bytes.
    pub fn parse(raw: &str) -> Option<IdempotencyKey> {
        let ok = !raw.is_empty() && raw.len() <= 255 && raw.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| IdempotencyKey(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key a payment is charged under at the gateway: derived from the payment's random reference,
/// so it is unique across databases, resets and installations sharing one gateway account.
pub fn gateway_key(reference: uuid::Uuid) -> String {
    format!("pay_{}", reference.simple())
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum PaymentStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    /// The last attempt may have reached the gateway and nobody could tell whether it charged:
    /// not final, and never reported as a failure; the gateway is asked again later.
    RequiresConfirmation,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Processing => "processing",
            PaymentStatus::Completed => "completed",
            PaymentStatus::Failed => "failed",
            PaymentStatus::RequiresConfirmation => "requires_confirmation",
        }
    }
}

/// The word a shopper reads for a payment's state: a failure that will be retried is "retrying",
/// never "failed", and an unknown outcome is being confirmed, not lost.
/// One step of a payment's history (an event's new status, and the one before) in plain words:
/// what the person paying reads, and the merchant beside the operator's reason. A failure that
/// will be retried is not called one; `last_and_final`: this step is the last, and nothing more
/// will happen.
pub fn history_words(to: &str, from: Option<&str>, last_and_final: bool) -> &'static str {
    match (to, from) {
        ("pending", _) => "Payment started",
        ("processing", Some("failed")) => "Trying again",
        ("processing", Some("processing")) => "Checking again after an interruption",
        ("processing", _) => "Sent to the payment provider",
        ("requires_confirmation", _) => "No clear answer yet: asking the payment provider",
        ("completed", _) => "Paid",
        ("failed", _) if last_and_final => "Not paid: no money was taken",
        ("failed", _) => "No answer in time: we will try again",
        _ => "Updated",
    }
}

pub fn status_word(status: PaymentStatus, retryable: bool) -> &'static str {
    match status {
        PaymentStatus::Failed if retryable => "retrying",
        PaymentStatus::RequiresConfirmation => "confirming",
        other => other.as_str(),
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(PaymentStatus::Pending),
            "processing" => Ok(PaymentStatus::Processing),
            "completed" => Ok(PaymentStatus::Completed),
            "failed" => Ok(PaymentStatus::Failed),
            "requires_confirmation" => Ok(PaymentStatus::RequiresConfirmation),
            other => Err(format!("unknown payment status {other:?}")),
        }
    }
}

impl ToSql<Text, Pg> for PaymentStatus {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
    }
}

impl FromSql<Text, Pg> for PaymentStatus {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let s = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        Ok(s.parse()?)
    }
}

/// Pay for this order, on behalf of this user.
#[derive(Debug, Clone, Copy)]
pub struct PayOrder {
    pub user_id: i64,
    pub order_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;


    #[test]
    fn idempotency_keys_are_derived_from_user_and_order() {
        assert_eq!(IdempotencyKey::for_order(7, 42).as_str(), "payment_7_42");
        assert_ne!(IdempotencyKey::for_order(7, 42), IdempotencyKey::for_order(42, 7));
        assert!(IdempotencyKey::parse("").is_none());
        assert!(IdempotencyKey::parse("has space").is_none());
        assert!(IdempotencyKey::parse("payment_1_2").is_some());
    }

    #[test]
    fn gateway_keys_come_from_the_random_reference_not_from_ids() {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        assert_ne!(gateway_key(a), gateway_key(b));
        assert!(gateway_key(a).starts_with("pay_") && gateway_key(a).len() == 36);
        assert!(IdempotencyKey::parse(&gateway_key(a)).is_some(), "a key any gateway accepts");
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in [
            PaymentStatus::Pending,
            PaymentStatus::Processing,
            PaymentStatus::Completed,
            PaymentStatus::Failed,
            PaymentStatus::RequiresConfirmation,
        ] {
            assert_eq!(s.as_str().parse::<PaymentStatus>().unwrap(), s);
        }
        assert!("refunded".parse::<PaymentStatus>().is_err());
    }
}
