//! The demo's payment history, made known to `agora gateway-sim`: the seeded payments were never
//! sent to it (they are a month old when `make run` first starts), so without this their refunds
//! would be refused as "No such charge". Each completed demo payment's charge is registered with
//! the simulation's ledger under its own id, amount and key; the payments themselves, completed
//! and frozen, are not touched.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use std::time::Duration;

use super::gateway::Charge;
use crate::schema::payments;

/// The completed demo payments' charges, as the gateway made them.
pub fn demo_charges(conn: &mut PgConnection) -> QueryResult<Vec<Charge>> {
    let rows: Vec<(Option<String>, String, BigDecimal, String, DateTime<Utc>)> = payments::table
        .filter(payments::status.eq("completed").and(payments::external_transaction_id.like("ch\\_demo\\_%")))
        .order(payments::id)
        .select((payments::external_transaction_id, payments::gateway_key, payments::amount, payments::currency, payments::created_at))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, key, amount, currency, created_at)| Some(Charge { id: id?, idempotency_key: key, amount, currency, created_at }))
        .collect())
}

/// Registers the demo's charges with the gateway-sim at `base_url` (`POST /charges`), waiting up
/// to `patience` for it to start listening. Returns how many it did not know yet.
pub fn register_with_sim(conn: &mut PgConnection, base_url: &str, patience: Duration) -> Result<usize, String> {
    let charges = demo_charges(conn).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let url = format!("{}/charges", base_url.trim_end_matches('/'));
    runtime.block_on(async move {
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        loop {
            let sent = client.post(&url).json(&serde_json::json!({ "data": charges })).send().await;
            match sent {
                Ok(answer) if answer.status().is_success() => {
                    let body: serde_json::Value = answer.json().await.map_err(|e| e.to_string())?;
                    return Ok(body["imported"].as_u64().unwrap_or(0) as usize);
                }
                Ok(answer) => return Err(format!("gateway-sim refused the demo charges: {}", answer.status())),
                // Not listening yet (it starts beside the seed): try again shortly.
                Err(e) if started.elapsed() < patience => {
                    log::debug!("gateway-sim not ready: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("gateway-sim did not answer at {url}: {e}")),
            }
        }
    })
}
