//! The OpenAPI document checked against the API by schemathesis: a test binary of its own, so that
//! cargo runs it after `tests/it` rather than beside it — its generator keeps a core busy for a
//! minute and a half, and the timing-sensitive tests in `it` (warm pages within Redis's deadline,
//! rate limits) must not share the machine with it.

#[allow(dead_code, unused_imports)]
#[path = "../it/support/mod.rs"]
mod support;

mod api_contract;
