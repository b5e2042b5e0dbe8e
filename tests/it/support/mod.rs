pub mod api;
pub mod app;
pub mod db;
pub mod fixtures;
pub mod gateways;
pub mod http;
pub mod load;
pub mod redis;
pub mod shopper;
pub mod webdriver;

pub use app::{GatewaySim, TestApp};
pub use db::TestDb;
pub use http::Client;
