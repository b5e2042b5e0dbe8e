//! Money, parsed once: an amount with at most two decimals in a currency. Everything that moves
//! money — a charge, a refund, an order's total, a ledger entry, either face of the merchants'
//! area — carries a `Money`, made at the edge (a form's "12.50", an API's minor units, a row read
//! back), so nothing downstream re-checks a bare decimal or a currency string.

use bigdecimal::{BigDecimal, Signed, ToPrimitive};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use std::fmt;
use std::str::FromStr;

/// An ISO 4217 code: three capital letters, as every `currency` column's CHECK has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const USD: Currency = Currency(*b"USD");
    pub const EUR: Currency = Currency(*b"EUR");
    pub const GBP: Currency = Currency(*b"GBP");
    pub const DKK: Currency = Currency(*b"DKK");
    /// The currencies the merchants' API takes (each with two decimals).
    pub const SETTLED: [Currency; 4] = [Currency::USD, Currency::EUR, Currency::GBP, Currency::DKK];

    /// Any three ASCII letters, in any case.
    pub fn parse(raw: &str) -> Option<Currency> {
        let bytes: [u8; 3] = raw.as_bytes().try_into().ok()?;
        bytes.iter().all(u8::is_ascii_alphabetic).then(|| Currency(bytes.map(|b| b.to_ascii_uppercase())))
    }

    /// One of the currencies the API settles, in any case.
    pub fn settled(raw: &str) -> Option<Currency> {
        Currency::parse(raw).filter(|c| Currency::SETTLED.contains(c))
    }

    /// As stored: `USD`.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII letters")
    }

    /// As the API speaks it: `usd`.
    pub fn lower(&self) -> String {
        self.code().to_ascii_lowercase()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl ToSql<Text, Pg> for Currency {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.code(), out)
    }
}

impl FromSql<Text, Pg> for Currency {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let raw = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        Currency::parse(&raw).ok_or_else(|| format!("not a currency code: {raw:?}").into())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("an amount must be a number such as 12.50")]
    NotANumber,
    #[error("an amount must be greater than zero")]
    NotPositive,
    #[error("an amount has at most two decimals")]
    TooPrecise,
    #[error("an amount must be less than 100,000,000")]
    TooLarge,
}

/// The largest amount Agora moves in one go, exclusive (the columns are NUMERIC(10, 2)).
const LIMIT: i64 = 100_000_000;

/// An amount with two decimals in a currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    amount: BigDecimal,
    currency: Currency,
}

impl Money {
    /// Any amount that fits the columns: at most two decimals, less than 100,000,000 either way
    /// (a ledger's refund entry is negative).
    pub fn new(amount: BigDecimal, currency: Currency) -> Result<Money, MoneyError> {
        if amount.normalized().fractional_digit_count() > 2 {
            return Err(MoneyError::TooPrecise);
        }
        if amount.abs() >= BigDecimal::from(LIMIT) {
            return Err(MoneyError::TooLarge);
        }
        Ok(Money { amount: amount.with_scale(2), currency })
    }

    /// A sum someone asks to move: more than zero.
    pub fn positive(amount: BigDecimal, currency: Currency) -> Result<Money, MoneyError> {
        if !amount.is_positive() {
            return Err(MoneyError::NotPositive);
        }
        Money::new(amount, currency)
    }

    /// What a person typed, `12.50`, in this currency.
    pub fn parse(raw: &str, currency: Currency) -> Result<Money, MoneyError> {
        let amount = BigDecimal::from_str(raw.trim()).map_err(|_| MoneyError::NotANumber)?;
        Money::positive(amount, currency)
    }

    /// Minor units, as the API carries money: `1999` is 19.99.
    pub fn from_minor(units: i64, currency: Currency) -> Money {
        Money { amount: BigDecimal::new(units.into(), 2), currency }
    }

    /// A value read back from a column the database keeps to two decimals.
    pub fn stored(amount: BigDecimal, currency: Currency) -> Money {
        Money { amount: amount.with_scale(2), currency }
    }

    pub fn minor_units(&self) -> i64 {
        (&self.amount * BigDecimal::from(100)).with_scale(0).to_i64().unwrap_or(i64::MAX)
    }

    pub fn amount(&self) -> &BigDecimal {
        &self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// `12.50`, `0.00`, for forms and CSV files (BigDecimal prints a zero without its scale, so
    /// that case is written out).
    pub fn major(&self) -> String {
        let text = self.amount.to_string();
        if text.contains('.') {
            text
        } else {
            format!("{text}.00")
        }
    }

    /// The same sum the other way: a debit for a credit.
    pub fn negated(&self) -> Money {
        Money { amount: -self.amount.clone(), currency: self.currency }
    }

    pub fn is_positive(&self) -> bool {
        self.amount.is_positive()
    }
}

/// `12.50 USD`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.major(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(raw: &str) -> Result<Money, MoneyError> {
        Money::parse(raw, Currency::USD)
    }

    #[test]
    fn money_is_parsed_once_with_two_decimals_and_shown_with_its_currency() {
        assert_eq!(usd("12.5").unwrap().to_string(), "12.50 USD");
        assert_eq!(usd("0.01").unwrap().minor_units(), 1);
        assert_eq!(usd("abc"), Err(MoneyError::NotANumber));
        assert_eq!(usd("0"), Err(MoneyError::NotPositive));
        assert_eq!(usd("-5"), Err(MoneyError::NotPositive));
        assert_eq!(usd("1.005"), Err(MoneyError::TooPrecise));
        assert_eq!(usd("100000000"), Err(MoneyError::TooLarge));
        assert_eq!(Money::from_minor(1_999, Currency::EUR).to_string(), "19.99 EUR");
        assert_eq!(Money::from_minor(0, Currency::USD).to_string(), "0.00 USD");
        assert_eq!(Money::new(BigDecimal::from(-19), Currency::USD).unwrap().minor_units(), -1_900, "a debit");
    }

    #[test]
    fn minor_units_round_trip_through_stored_decimals() {
        assert_eq!(Money::from_minor(1_999, Currency::USD).amount().to_string(), "19.99");
        assert_eq!(Money::stored("1000.00".parse().unwrap(), Currency::USD).minor_units(), 100_000);
        assert_eq!(Money::stored(BigDecimal::from(0), Currency::USD).major(), "0.00");
        assert_eq!(Money::from_minor(1_000, Currency::USD).major(), "10.00");
        assert_eq!(Currency::DKK.lower(), "dkk");
    }

    #[test]
    fn a_currency_is_three_letters_any_case_in_and_capitals_out() {
        assert_eq!(Currency::parse("usd"), Some(Currency::USD));
        assert_eq!(Currency::parse("SEK").map(|c| c.to_string()), Some("SEK".into()));
        assert_eq!(Currency::settled("sek"), None, "not one the API settles");
        assert_eq!(Currency::settled("Dkk"), Some(Currency::DKK));
        for wrong in ["", "US", "USDX", "U$D", "ÜSD"] {
            assert_eq!(Currency::parse(wrong), None, "{wrong}");
        }
    }
}
