//! The merchants' dashboard pages (server-rendered, usable without JavaScript).

use actix_web::web;

pub fn configure(_cfg: &mut web::ServiceConfig) {}
