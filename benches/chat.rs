//! `make bench`, third part: the chat API — message creates per second over HTTP (today's
//! synchronous path: numbered under the chat's row lock, one transaction each) and substring
//! search in a chat of 100,000 messages. Writes bench/chat.md.

use diesel::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use agora::app::{Services, Strategies};
use agora::cache::Cache;
use agora::clock::{Clock, SystemClock};
use agora::config::{AuthSettings, JobSettings, PaymentSettings};
use agora::db;
use agora::payments::fraud;
use agora::payments::gateway::{SimulatedGateway, Simulation};

mod common;
use common::fresh_database;

const MESSAGES: i64 = 100_000;

fn start(url: &str) -> common::Served {
    start_with(url, false)
}

/// The app; `redis`: chats and messages accepted through Redis (the intake), else numbered in PostgreSQL.
fn start_with(url: &str, redis: bool) -> common::Served {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let strategies = Strategies {
        gateway: Arc::new(SimulatedGateway::new(Simulation::always_succeeding(), Default::default())),
        fraud: Arc::new(fraud::NoFraudCheck),
        clock,
    };
    let jobs = JobSettings { workers: 0, ..JobSettings::default() };
    let cache = match redis {
        true => Cache::new(Some(&std::env::var("REDIS_URL").expect("run with `make bench`")), &format!("bench-chat-{}:", std::process::id())),
        false => Cache::disabled(),
    };
    let mut services = Services::new(db::build_pool(url, 16).unwrap(), cache, strategies, PaymentSettings::default(), jobs, AuthSettings::default());
    services.chat_rate = agora::chat::limits::RateSettings { per_second: 1_000_000.0, burst: 1_000_000, ..Default::default() };
    if redis {
        let intake = services.accept_chats_through_redis();
        while !matches!(intake.phase(), agora::chat::intake::Phase::Accepting(_)) {
            std::thread::sleep(std::time::Duration::from_millis(10)); // waiting for the first epoch
        }
    }
    common::serve(Arc::new(services), None)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// `clients` threads posting messages for `seconds`, each to chat `chat_of(client)`.
fn creates(base: &str, token: &str, clients: usize, seconds: f64, chat_of: fn(usize) -> usize) -> (f64, f64, f64) {
    let done = Arc::new(AtomicUsize::new(0));
    let latencies = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..clients {
            let (done, latencies) = (done.clone(), &latencies);
            let url = format!("{base}/api/v1/chat_applications/{token}/chats/{}/messages", chat_of(client));
            scope.spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                let mut mine = Vec::new();
                while started.elapsed().as_secs_f64() < seconds {
                    let t = Instant::now();
                    let answer = agent.post(&url).set("Content-Type", "application/json").send_string(r#"{"message":{"body":"a benchmark message"}}"#);
                    assert_eq!(answer.map(|r| r.status()).unwrap_or(0), 201);
                    mine.push(t.elapsed().as_secs_f64() * 1000.0);
                    done.fetch_add(1, Ordering::SeqCst);
                }
                latencies.lock().unwrap().extend(mine);
            });
        }
    });
    let mut latencies = latencies.into_inner().unwrap();
    latencies.sort_by(f64::total_cmp);
    (done.load(Ordering::SeqCst) as f64 / started.elapsed().as_secs_f64(), pct(&latencies, 0.5), pct(&latencies, 0.99))
}

fn main() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let url = fresh_database("agora_bench_chat");
    let mut conn = PgConnection::establish(&url).unwrap();
    let common::Served { base, handle } = start(&url);
    let agent = ureq::AgentBuilder::new().build();
    let app: serde_json::Value = agent.post(&format!("{base}/api/v1/chat_applications")).send_json(serde_json::json!({ "name": "Bench" })).unwrap().into_json().unwrap();
    let token = app["token"].as_str().unwrap().to_string();
    for _ in 0..33 {
        agent.post(&format!("{base}/api/v1/chat_applications/{token}/chats")).call().unwrap();
    }
    // Chat 33 gets 100,000 messages of mixed words, in English and Arabic.
    diesel::sql_query(format!(
        "INSERT INTO chat_messages (chat_id, number, body) \
         SELECT c.id, n, (ARRAY['order', 'shipping', 'refund', 'espresso', 'kettle', 'مرحبا', 'ledger', 'payment'])[1 + n % 8] || ' ' || \
             md5(n::text) || ' ' || (ARRAY['today', 'tomorrow', 'again', 'please', 'شكرا'])[1 + n % 5] \
         FROM chats c, generate_series(1, {MESSAGES}) n WHERE c.number = 33"
    ))
    .execute(&mut conn)
    .unwrap();
    diesel::sql_query("UPDATE chats SET messages_count = (SELECT count(*) FROM chat_messages m WHERE m.chat_id = chats.id)").execute(&mut conn).unwrap();
    diesel::sql_query("VACUUM ANALYZE").execute(&mut conn).unwrap();

    let mut rows = Vec::new();
    for (name, term) in [("a word (1 in 8 messages)", "espresso"), ("an infix of a hash (rare)", "3fa9"), ("Arabic", "شكرا"), ("absent", "zzzzzz")] {
        let mut times = Vec::new();
        for i in 0..220 {
            let started = Instant::now();
            let q = serde_urlencoded::to_string([("q", term)]).unwrap();
            let found: Vec<serde_json::Value> =
                agent.get(&format!("{base}/api/v1/chat_applications/{token}/chats/33/messages/search?{q}")).call().unwrap().into_json().unwrap();
            if i >= 20 {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            assert!(found.len() <= 100);
        }
        times.sort_by(f64::total_cmp);
        rows.push(format!("| search in a chat of {MESSAGES} messages: {name} | 1 client | {:.2} ms | {:.2} ms |", pct(&times, 0.5), pct(&times, 0.99)));
        eprintln!("{}", rows.last().unwrap());
    }
    let (spread, s50, s99) = creates(&base, &token, 32, 5.0, |client| 1 + client % 32);
    let (one, o50, o99) = creates(&base, &token, 32, 5.0, |_| 1);
    let mut created = vec![
        format!("| PostgreSQL numbering: 32 clients over 32 chats | {spread:.0} /s | {s50:.2} ms | {s99:.2} ms |"),
        format!("| PostgreSQL numbering: 32 clients into one chat | {one:.0} /s | {o50:.2} ms | {o99:.2} ms |"),
    ];
    actix_web::rt::System::new().block_on(handle.stop(true));

    // The same through Redis: accepted at once, persisted behind.
    let redis_url = fresh_database("agora_bench_chat_redis");
    let common::Served { base, handle } = start_with(&redis_url, true);
    let app: serde_json::Value = agent.post(&format!("{base}/api/v1/chat_applications")).send_json(serde_json::json!({ "name": "Bench" })).unwrap().into_json().unwrap();
    let token = app["token"].as_str().unwrap().to_string();
    for _ in 0..32 {
        agent.post(&format!("{base}/api/v1/chat_applications/{token}/chats")).call().unwrap();
    }
    let persisted = || -> i64 { diesel::dsl::sql::<diesel::sql_types::BigInt>("SELECT count(*) FROM chat_messages").get_result(&mut PgConnection::establish(&redis_url).unwrap()).unwrap() };
    let started = Instant::now();
    for (clients, label, chat_of) in [(64usize, "64 clients over 32 chats", (|c: usize| 1 + c % 32) as fn(usize) -> usize), (32, "32 clients into one chat", (|_| 1) as fn(usize) -> usize)] {
        let (rate, p50, p99) = creates(&base, &token, clients, 5.0, chat_of);
        created.push(format!("| Redis intake: {label} (accepted) | {rate:.0} /s | {p50:.2} ms | {p99:.2} ms |"));
    }
    let mut last = persisted();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100)); // sampling the persister's progress
        let now = persisted();
        if now == last {
            break;
        }
        last = now;
    }
    let behind = started.elapsed().as_secs_f64();
    created.push(format!("| Redis intake: persisted (every accepted message in PostgreSQL) | {:.0} /s | {last} messages in {behind:.1} s | |", last as f64 / behind));
    eprintln!("{}", created.join("\n"));
    actix_web::rt::System::new().block_on(handle.stop(true));
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let report = format!(
        "# Chat API\n\n`make bench`, {date}, on a machine with {cores} cores; PostgreSQL on the same machine, release build, 2 HTTP workers. \
         Creates are measured both ways: numbered in PostgreSQL under the parent's row lock, and accepted through Redis \
         (one Lua call; a persister writes batches behind; aim 10,000/s).\n\n\
         | search (GET …/messages/search?q=, 200 requests after 20) | clients | p50 | p99 |\n| --- | --- | --- | --- |\n{}\n\n\
         | creates (POST …/messages, 5 s) | throughput | p50 | p99 |\n| --- | --- | --- | --- |\n{}\n",
        rows.join("\n"),
        created.join("\n"),
    );
    println!("\n{report}");
    std::fs::create_dir_all("bench").unwrap();
    std::fs::write("bench/chat.md", report).unwrap();
}
