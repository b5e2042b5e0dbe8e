//! Every query the merchants' area makes. Each one is given the customers the caller is linked to
//! (read on every request) and never reaches past them.

mod customers;
mod duplicates;
mod idempotency;
mod invariants;
mod ledger;
mod payments;
mod principals;

pub use customers::*;
pub use duplicates::*;
pub use idempotency::*;
pub use invariants::*;
pub use ledger::*;
pub use payments::*;
pub use principals::*;
