//! `make bench`, second part: the merchants' dashboard and API at 1,000,000 payments — the first
//! filtered page for each filter (p50 / p99, with PostgreSQL's plan for it), the CSV export of
//! every row (time and memory), and API payment creations per second. Writes bench/merchants.md.
//!
//! BENCH_PAYMENTS overrides the 1,000,000 (for working on it).

use diesel::prelude::*;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora::app::{Services, Strategies};
use agora::cache::Cache;
use agora::clock::{Clock, SystemClock};
use agora::config::{AuthSettings, JobSettings, PaymentSettings};
use agora::merchants::query::{parse_query, FILTER_PARAMS};
use agora::merchants::tokens::TokenKey;
use agora::db;
use agora::payments::fraud;
use agora::payments::gateway::{SimulatedGateway, Simulation};

mod common;
use common::{fresh_database, serve};

/// Three merchants (45%, 35%, 20% of the payments), twenty payers, a year of history: 85%
/// completed, 8% failed, 4% pending, 2% processing, 1% awaiting confirmation; amounts 0.50 to
/// 999.99, most of them small.
fn load_payments(conn: &mut PgConnection, total: i64) {
    diesel::sql_query(
        "INSERT INTO users (email, name, password_hash) SELECT 'payer' || g || '@bench.test', 'Payer ' || g, 'x' FROM generate_series(1, 20) g",
    )
    .execute(conn)
    .unwrap();
    diesel::sql_query("INSERT INTO customers (name) VALUES ('Large Merchant'), ('Medium Merchant'), ('Small Merchant')").execute(conn).unwrap();
    let batch = 100_000;
    let mut done = 0;
    while done < total {
        let n = batch.min(total - done);
        diesel::sql_query(format!(
            "WITH rows AS ( \
                 SELECT g, CASE WHEN r1 < 0.45 THEN 1 WHEN r1 < 0.80 THEN 2 ELSE 3 END AS customer_id, 1 + (g % 20) AS user_id, \
                     round((0.50 + 999.49 * r2 * r2 * r2)::numeric, 2) AS amount, \
                     now() - make_interval(secs => r3 * 365 * 86400) AS at, \
                     CASE WHEN r4 < 0.85 THEN 'completed' WHEN r4 < 0.93 THEN 'failed' WHEN r4 < 0.97 THEN 'pending' \
                          WHEN r4 < 0.99 THEN 'processing' ELSE 'requires_confirmation' END AS status \
                 FROM (SELECT g, random() r1, random() r2, random() r3, random() r4 FROM generate_series({from}, {to}) g) s), \
             made AS ( \
                 INSERT INTO orders (user_id, customer_id, total, currency, source, status, created_at) \
                 SELECT user_id, customer_id, amount, 'USD', 'api', CASE status WHEN 'completed' THEN 'paid' WHEN 'failed' THEN 'failed' ELSE 'pending' END, at \
                 FROM rows ORDER BY at RETURNING id, user_id, customer_id, total, created_at, status) \
             INSERT INTO payments (user_id, order_id, customer_id, amount, currency, status, idempotency_key, gateway_key, \
                 external_transaction_id, processing_started_at, next_check_at, retryable, created_at, updated_at) \
             SELECT user_id, id, customer_id, total, 'USD', \
                 CASE status WHEN 'paid' THEN 'completed' WHEN 'failed' THEN 'failed' ELSE \
                     (ARRAY['pending', 'pending', 'processing', 'requires_confirmation'])[1 + id % 4] END, \
                 'bench_' || id, 'bench_' || id, CASE status WHEN 'paid' THEN 'ch_' || id END, created_at, created_at, false, created_at, created_at \
             FROM made",
            from = done + 1,
            to = done + n
        ))
        .execute(conn)
        .unwrap();
        done += n;
        eprintln!("  {done} payments");
    }
    // Staff: one sees the two larger merchants (lists merge two), one sees all three (the CSV).
    diesel::sql_query(
        "INSERT INTO users (email, name, password_hash) VALUES ('staff@bench.test', 'Staff', 'x'), ('finance@bench.test', 'Finance', 'x')",
    )
    .execute(conn)
    .unwrap();
    diesel::sql_query(
        "INSERT INTO user_customers (user_id, customer_id) \
         SELECT u.id, c FROM users u, generate_series(1, 3) c WHERE (u.email = 'staff@bench.test' AND c <= 2) OR u.email = 'finance@bench.test'",
    )
    .execute(conn)
    .unwrap();
    diesel::sql_query("VACUUM ANALYZE").execute(conn).unwrap();
}

struct Running {
    base: String,
    services: Arc<Services>,
    handle: actix_web::dev::ServerHandle,
}

fn start(url: &str) -> Running {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let strategies = Strategies {
        gateway: Arc::new(SimulatedGateway::new(Simulation::always_succeeding(), Default::default())),
        fraud: Arc::new(fraud::NoFraudCheck),
        clock,
    };
    let jobs = JobSettings { workers: 0, max_ready: 100_000_000, ..JobSettings::default() };
    let services = Arc::new(Services::new(db::build_pool(url, 16).unwrap(), Cache::disabled(), strategies, PaymentSettings::default(), jobs, AuthSettings::default()));
    let served = serve(services.clone(), None);
    Running { base: served.base, services, handle: served.handle }
}

fn token_for(served: &Running, conn: &mut PgConnection, email: &str) -> String {
    let id: uuid::Uuid =
        agora::schema::users::table.filter(agora::schema::users::email.eq(email)).select(agora::schema::users::public_id).first(conn).unwrap();
    TokenKey::new(&served.services.api_token_secret).unwrap().issue(&agora::merchants::ids::USER.show(id), chrono::Utc::now(), 86_400).0
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// The indexes a plan reads, and whether it scans the payments table whole.
fn plan_summary(plan: &[String]) -> String {
    let mut indexes: Vec<String> = plan
        .iter()
        .filter_map(|l| l.split(" using ").nth(1).map(|rest| rest.split_whitespace().next().unwrap_or("").to_string()))
        .filter(|i| i.starts_with("payments"))
        .collect();
    indexes.sort();
    indexes.dedup();
    let seq = plan.iter().any(|l| l.contains("Seq Scan on payments"));
    format!("{}{}", indexes.join(", "), if seq { " + **Seq Scan on payments**" } else { "" })
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let total: i64 = std::env::var("BENCH_PAYMENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let url = fresh_database("agora_bench_merchants");
    let mut conn = PgConnection::establish(&url).unwrap();
    let loading = Instant::now();
    load_payments(&mut conn, total);
    eprintln!("loaded {total} payments in {:.0} s", loading.elapsed().as_secs_f64());
    let served = start(&url);
    let staff = token_for(&served, &mut conn, "staff@bench.test");
    let finance = token_for(&served, &mut conn, "finance@bench.test");
    let agent = ureq::AgentBuilder::new().build();
    let references: Vec<uuid::Uuid> = diesel::sql_query("SELECT reference FROM payments WHERE customer_id <= 2 ORDER BY random() LIMIT 300")
        .load::<Reference>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|r| r.reference)
        .collect();
    let today = chrono::Utc::now().date_naive();
    let week_ago = (chrono::Utc::now() - chrono::Duration::days(7)).timestamp();
    let mid = today - chrono::Duration::days(180);
    // The two merchants and a payer, by the ids the API shows.
    let mut public = |table: &str, id: i64| -> uuid::Uuid {
        diesel::sql_query(format!("SELECT public_id AS reference FROM {table} WHERE id = {id}")).get_result::<Reference>(&mut conn).unwrap().reference
    };
    let merchants = agora::merchants::ids::Linked::new(vec![(1, public("customers", 1), true), (2, public("customers", 2), true)]);
    let (cus2, usr7) = (merchants.shown(2).unwrap(), agora::merchants::ids::USER.show(public("users", 7)));
    let filters: Vec<(&str, String)> = vec![
        ("none (two merchants merged)", String::new()),
        ("customer", format!("customer={cus2}")),
        ("user", format!("user={usr7}")),
        ("reference", "reference={ref}".into()),
        ("status=completed", "status=completed".into()),
        ("status=requires_confirmation (1%)", "status=requires_confirmation".into()),
        ("created[gte] last 7 days", format!("created%5Bgte%5D={week_ago}")),
        ("from/to one day, 6 months ago", format!("from={mid}&to={mid}")),
        ("amount[gte]=90000 (rare)", "amount%5Bgte%5D=90000".into()),
        ("amount[lte]=100 (rare)", "amount%5Blte%5D=100".into()),
        ("all combined", format!("customer={}&user={usr7}&status=completed&from={}&to={today}&amount%5Bgte%5D=1000&amount%5Blte%5D=50000", merchants.shown(1).unwrap(), today - chrono::Duration::days(90))),
    ];
    let mut rows = Vec::new();
    let mut plans = Vec::new();
    const SAMPLES: usize = 300;
    for (name, query) in &filters {
        let mut latencies = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES + 20 {
            let q = query.replace("{ref}", &references[i % references.len()].to_string());
            let started = Instant::now();
            let body = agent.get(&format!("{}/api/v1/payments?{q}", served.base)).set("Authorization", &format!("Bearer {staff}")).call().unwrap().into_string().unwrap();
            assert!(body.starts_with("{"), "{body}");
            if i >= 20 {
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        latencies.sort_by(f64::total_cmp);
        let parsed = parse_query(&query.replace("{ref}", &references[0].to_string()), &FILTER_PARAMS).unwrap();
        let filter = parsed.payment_filter().unwrap();
        let scope = agora::merchants::service::visible_scope(&merchants, &filter).unwrap();
        let plan = agora::merchants::repo::explain_payments_page(&mut conn, &scope, &filter, 11).unwrap();
        let summary = plan_summary(&plan);
        rows.push(format!("| first page, filter: {name} | {:.2} ms | {:.2} ms | {summary} |", pct(&latencies, 0.5), pct(&latencies, 0.99)));
        plans.push(format!("### {name}\n\n```\n{}\n```\n", plan.join("\n")));
        eprintln!("{}", rows.last().unwrap());
    }

    // The dashboard page's totals and chart: one aggregate over the whole filtered set.
    let mut aggregates = Vec::new();
    for (name, query) in [("no filter (a year, two merchants)", String::new()), ("last 30 days", format!("from={}", today - chrono::Duration::days(29)))] {
        let filter = parse_query(&query, &FILTER_PARAMS).unwrap().payment_filter().unwrap();
        let mut times = Vec::new();
        for _ in 0..12 {
            let started = Instant::now();
            agora::merchants::repo::daily_volume(&mut conn, &[1, 2], &filter).unwrap();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        aggregates.push(format!("| dashboard totals and chart, {name} | {:.1} ms | {:.1} ms |", pct(&times, 0.5), pct(&times, 0.99)));
        eprintln!("{}", aggregates.last().unwrap());
    }

    // The CSV of every payment, read as it streams; memory sampled while it does.
    let baseline = rss_kib();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20)); // sampling, not synchronising
            }
        })
    };
    let started = Instant::now();
    let response = agent.get(&format!("{}/dashboard/payments.csv", served.base)).set("Authorization", &format!("Bearer {finance}")).call().unwrap();
    let lines = std::io::BufReader::new(response.into_reader()).lines().count();
    let csv_seconds = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::SeqCst);
    sampler.join().unwrap();
    let grew_mib = (peak.load(Ordering::SeqCst).saturating_sub(baseline)) as f64 / 1024.0;
    assert_eq!(lines as i64, total + 1, "a header and every payment");
    let csv_row = format!("| CSV export, every payment ({total} rows) | {csv_seconds:.1} s | {:.0} rows/s | process memory grew {grew_mib:.1} MiB while streaming |", total as f64 / csv_seconds);
    eprintln!("{csv_row}");

    // API payment creations per second (accepted: payment, order and job written; no workers).
    const CLIENTS: usize = 64;
    const SECONDS: f64 = 5.0;
    let created = Arc::new(AtomicUsize::new(0));
    let latencies = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (created, latencies, staff, base) = (created.clone(), &latencies, staff.clone(), served.base.clone());
            let body = format!(r#"{{"customer":"{}","amount":1999,"currency":"usd","payment_method":"pm_card_visa"}}"#, merchants.shown(1).unwrap());
            scope.spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                let mut mine = Vec::new();
                let mut i = 0;
                while started.elapsed().as_secs_f64() < SECONDS {
                    let t = Instant::now();
                    let answer = agent
                        .post(&format!("{base}/api/v1/payments"))
                        .set("Authorization", &format!("Bearer {staff}"))
                        .set("Idempotency-Key", &format!("bench-{client}-{i}"))
                        .set("Content-Type", "application/json")
                        .send_string(&body);
                    match answer {
                        Ok(r) => assert_eq!(r.status(), 201),
                        Err(ureq::Error::Status(s, r)) => panic!("{s}: {}", r.into_string().unwrap_or_default()),
                        Err(e) => panic!("{e}"),
                    }
                    mine.push(t.elapsed().as_secs_f64() * 1000.0);
                    created.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
                latencies.lock().unwrap().extend(mine);
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = latencies.into_inner().unwrap();
    latencies.sort_by(f64::total_cmp);
    let n = created.load(Ordering::SeqCst);
    let create_row = format!(
        "| POST /api/v1/payments (Idempotency-Key, order + payment + job + stored answer) | {CLIENTS} clients, 2 HTTP workers | {n} | {:.0} created/s | p50 {:.2} ms | p99 {:.2} ms |",
        n as f64 / elapsed,
        pct(&latencies, 0.5),
        pct(&latencies, 0.99)
    );
    eprintln!("{create_row}");
    actix_web::rt::System::new().block_on(served.handle.stop(true));

    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let report = format!(
        "# Merchants' dashboard and API at {total} payments\n\n`make bench`, {date}, on a machine with {cores} cores; PostgreSQL on the same machine, \
         release build, one client asking in turn (latency), {SAMPLES} requests per filter after 20 to warm up. The caller is linked to two \
         merchants (80% of the rows), so every unfiltered page merges two.\n\n\
         | first filtered page (GET /api/v1/payments, limit 10) | p50 | p99 | indexes in PostgreSQL's plan |\n| --- | --- | --- | --- |\n{}\n\n\
         | dashboard aggregate (daily_volume) | p50 | p99 |\n| --- | --- | --- |\n{}\n\n\
         | export | time | rate | memory |\n| --- | --- | --- | --- |\n{csv_row}\n\n\
         | API writes | configuration | n | throughput | p50 | p99 |\n| --- | --- | --- | --- | --- | --- |\n{create_row}\n\n\
         ## Plans\n\n{}",
        rows.join("\n"),
        aggregates.join("\n"),
        plans.join("\n")
    );
    println!("\n{report}");
    std::fs::create_dir_all("bench").unwrap();
    std::fs::write("bench/merchants.md", report).unwrap();
}

#[derive(QueryableByName)]
struct Reference {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    reference: uuid::Uuid,
}
