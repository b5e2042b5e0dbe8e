//! Every integration test, in one binary so it links once and runs in one process.
//! They need the private PostgreSQL and Redis that `make test` starts.

mod support;

mod auth_pages;
mod architecture;
mod browser;
mod browser_paths;
mod chat_api;
mod chat_intake;
mod checkout_http;
mod front_door;
mod gateway_speed;
mod health;
mod jobs_pipeline;
mod merchants_api;
mod merchants_contract;
mod merchants_pages;
mod money;
mod payments_processor;
mod processes;
mod shared_state;
mod thread_controls;
mod threads_pages;
mod trust;
