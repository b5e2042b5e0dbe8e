//! Agora: a market and a forum in one server.
//!
//! One module per area of the product (`auth`, `orders`, `payments`, `jobs`, `threads`, `merchants`,
//! `chat`) and the plumbing they share (`config`, `db`, `cache`, `clock`, `web`).

pub mod app;
pub mod auth;
pub mod cache;
pub mod chat;
pub mod clock;
pub mod config;
pub mod merchants;
pub mod db;
pub mod jobs;
pub mod metrics;
pub mod orders;
pub mod payments;
pub mod schema;
pub mod seed;
pub mod threads;
pub mod web;
