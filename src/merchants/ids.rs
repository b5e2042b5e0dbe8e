//! The ids the merchants' API and dashboard show, Stripe's way: a prefix that says what the
//! object is, then 32 hexadecimal digits of a random UUID (`cus_3f1c…`). Customers, users and
//! ledger entries carry a random `public_id` beside their sequential key; a refund's id is its
//! reference. Payments keep their bare reference UUID (contract v1). Nothing an id shows counts
//! the objects that exist, and one id cannot be guessed from another.

use uuid::Uuid;

/// One kind of object and its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind(&'static str);

pub const CUSTOMER: Kind = Kind("cus");
pub const USER: Kind = Kind("usr");
pub const REFUND: Kind = Kind("re");
pub const BALANCE_TRANSACTION: Kind = Kind("txn");

impl Kind {
    pub fn show(self, id: Uuid) -> String {
        format!("{}_{}", self.0, id.simple())
    }

    /// The UUID behind an id of this kind: exactly the prefix, `_` and 32 lowercase hexadecimal
    /// digits. Anything else is no id of this kind (and so, to a caller, a missing object).
    pub fn parse(self, raw: &str) -> Option<Uuid> {
        let hex = raw.strip_prefix(self.0)?.strip_prefix('_')?;
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        Uuid::try_parse(hex).ok()
    }
}

/// The customers a user is linked to: their keys, and the ids callers know them by (same order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Linked {
    pub ids: Vec<i64>,
    pub public: Vec<Uuid>,
    /// Those of `ids` the caller is an owner of.
    pub owned: Vec<i64>,
}

impl Linked {
    /// From (customer, its public id, whether the caller owns it).
    pub fn new(links: Vec<(i64, Uuid, bool)>) -> Linked {
        let owned = links.iter().filter(|(_, _, owner)| *owner).map(|(id, _, _)| *id).collect();
        let (ids, public) = links.into_iter().map(|(id, public, _)| (id, public)).unzip();
        Linked { ids, public, owned }
    }

    pub fn owns(&self, id: i64) -> bool {
        self.owned.contains(&id)
    }

    /// The key of the customer a caller named (`cus_…`), if it is one of these.
    pub fn find(&self, raw: &str) -> Option<i64> {
        let wanted = CUSTOMER.parse(raw)?;
        self.public.iter().position(|p| *p == wanted).map(|i| self.ids[i])
    }

    /// The id callers know this customer by.
    pub fn shown(&self, id: i64) -> Option<String> {
        self.ids.iter().position(|i| *i == id).map(|i| CUSTOMER.show(self.public[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_only_with_its_own_prefix_and_exact_digits() {
        let uuid = Uuid::new_v4();
        let shown = CUSTOMER.show(uuid);
        assert!(shown.starts_with("cus_") && shown.len() == 36, "{shown}");
        assert_eq!(CUSTOMER.parse(&shown), Some(uuid));
        assert_eq!(USER.parse(&shown), None, "a customer's id is no user's");
        for wrong in ["cus_x", "cus_", "cus", "7", &shown.to_uppercase(), &format!("{shown}0"), &uuid.to_string(), &format!("cus_{uuid}")] {
            assert_eq!(CUSTOMER.parse(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn linked_customers_are_found_by_the_id_callers_know() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let linked = Linked::new(vec![(3, a, true), (9, b, false)]);
        assert_eq!(linked.find(&CUSTOMER.show(b)), Some(9));
        assert_eq!(linked.find(&CUSTOMER.show(Uuid::new_v4())), None);
        assert_eq!(linked.find("9"), None, "the key itself is not an id callers use");
        assert_eq!(linked.shown(3), Some(CUSTOMER.show(a)));
        assert!(linked.owns(3) && !linked.owns(9), "an owner of the first, a member of the second");
    }
}
