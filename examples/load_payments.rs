//! `scripts/load-payments`: sends payments through the merchants' API at a set rate for a set
//! time and reports how many were accepted, settled, failed and lost, with latency percentiles.
//!
//! Environment: AGORA_URL (http://127.0.0.1:8080), AGORA_EMAIL / AGORA_PASSWORD (the demo's
//! finance@example.com / agora-demo), CUSTOMER (a `cus_…` id; the first the user is linked to), RATE (100 per
//! second), SECONDS (10), PAYMENT_METHOD (pm_card_visa; "random" for the configured rates),
//! SETTLE_SECONDS (60), SENDERS (64).

#[path = "../tests/it/support/load.rs"]
mod load;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() {
    let base = env("AGORA_URL", "http://127.0.0.1:8080");
    let (email, password) = (env("AGORA_EMAIL", "finance@example.com"), env("AGORA_PASSWORD", "agora-demo"));
    let signed_in: serde_json::Value = ureq::post(&format!("{base}/api/v1/auth/token"))
        .send_json(serde_json::json!({ "email": email, "password": password, "expires_in": 7200 }))
        .unwrap_or_else(|e| panic!("cannot sign in as {email}: {e}"))
        .into_json()
        .unwrap();
    let token = signed_in["token"].as_str().expect("a token").to_string();
    let me: serde_json::Value = ureq::get(&format!("{base}/api/v1/me")).set("Authorization", &format!("Bearer {token}")).call().unwrap().into_json().unwrap();
    let customer = match std::env::var("CUSTOMER") {
        Ok(c) => c,
        Err(_) => me["customers"][0].as_str().expect("the user is linked to a customer").to_string(),
    };
    let method = env("PAYMENT_METHOD", "pm_card_visa");
    let plan = load::Plan {
        base,
        token,
        customer,
        per_second: env("RATE", "100").parse().expect("RATE is a number"),
        seconds: env("SECONDS", "10").parse().expect("SECONDS is a number"),
        payment_method: (method != "random").then_some(method),
        settle_within: std::time::Duration::from_secs(env("SETTLE_SECONDS", "60").parse().expect("SETTLE_SECONDS is a number")),
        senders: env("SENDERS", "64").parse().expect("SENDERS is a number"),
    };
    println!("sending {} payments a second for {} s to customer {}…", plan.per_second, plan.seconds, plan.customer);
    // A running server says nothing when payments settle: ask again every 250 ms.
    let report = load::run(&plan, &|| std::thread::sleep(std::time::Duration::from_millis(250)));
    println!("{}", report.summary());
    if report.lost > 0 || report.refused > 0 {
        std::process::exit(1);
    }
}
