//! `make bench`: throughput of the job queue and of checkout, against the private PostgreSQL on
//! this machine. Prints a table and writes it to bench/results.md.

use diesel::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora::app::{Services, Strategies};
use agora::cache::Cache;
use agora::clock::{Clock, SystemClock};
use agora::config::{AuthSettings, JobSettings, PaymentSettings};
use agora::db;
use agora::jobs::WorkerPool;
use agora::payments::fraud;
use agora::payments::gateway::{SimulatedGateway, Simulation};

const NOOP_JOBS: i64 = 50_000;
const PAYMENT_JOBS: i64 = 10_000;
const CHECKOUTS: usize = 4_000;
const CLIENTS: usize = 16;

mod common;
use common::{admin_url, free_port, fresh_database, pgbench_pay, serve, until_up, Proc, Served};

fn services(url: &str, threads: usize, batch: i64) -> Arc<Services> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let strategies = Strategies {
        gateway: Arc::new(SimulatedGateway::new(Simulation::always_succeeding(), agora::payments::gateway::Latency::default())),
        fraud: Arc::new(fraud::default_rules(clock.clone())),
        clock,
    };
    let jobs = JobSettings { workers: threads, batch, max_ready: 1_000_000, ..JobSettings::default() };
    let pool = db::build_pool(url, (threads as u32 + 4).max(8)).unwrap();
    Arc::new(Services::new(pool, Cache::disabled(), strategies, PaymentSettings::default(), jobs, AuthSettings::default()))
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::dsl::sql::<diesel::sql_types::BigInt>(sql).get_result(conn).unwrap()
}

/// Runs the pool until `expected` jobs are completed; returns jobs per second.
fn drain(services: &Services, conn: &mut PgConnection, expected: i64) -> f64 {
    let started = Instant::now();
    let pool: WorkerPool = services.start_workers();
    services.wake.notify();
    loop {
        if count(conn, "SELECT count(*) FROM jobs WHERE state IN ('completed', 'dead')") >= expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    pool.stop();
    expected as f64 / elapsed.as_secs_f64()
}

fn noop_jobs(threads: usize, batch: i64) -> f64 {
    let url = fresh_database("agora_bench");
    let mut conn = PgConnection::establish(&url).unwrap();
    diesel::sql_query(format!(
        "INSERT INTO jobs (kind, run_at) SELECT 'noop', now() - interval '1 second' FROM generate_series(1, {NOOP_JOBS})"
    ))
    .execute(&mut conn)
    .unwrap();
    diesel::sql_query("VACUUM ANALYZE jobs").execute(&mut conn).unwrap();
    drain(&services(&url, threads, batch), &mut conn, NOOP_JOBS)
}

/// Users, one product, and `orders` unpaid orders spread over the users (so the velocity rule,
/// 20 payments per user per hour, lets them all through).
fn shop(conn: &mut PgConnection, users: i64, orders: i64) {
    diesel::sql_query(format!(
        "INSERT INTO users (email, name, password_hash) \
         SELECT 'u' || g || '@bench.example', 'User ' || g, 'x' FROM generate_series(1, {users}) g"
    ))
    .execute(conn)
    .unwrap();
    diesel::sql_query("INSERT INTO customers (name) VALUES ('Bench Merchant')").execute(conn).unwrap();
    diesel::sql_query("INSERT INTO products (customer_id, name, price, currency, stock) SELECT id, 'Widget', 9.99, 'USD', 1000000 FROM customers")
        .execute(conn)
        .unwrap();
    diesel::sql_query(format!(
        "INSERT INTO orders (user_id, customer_id, total, currency, stock_reserved) \
         SELECT 1 + (g % {users}), (SELECT id FROM customers), 9.99, 'USD', true FROM generate_series(1, {orders}) g"
    ))
    .execute(conn)
    .unwrap();
    diesel::sql_query(
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price) SELECT o.id, p.id, 1, 9.99 FROM orders o, products p",
    )
    .execute(conn)
    .unwrap();
}

fn payment_jobs(threads: usize, batch: i64) -> f64 {
    let url = fresh_database("agora_bench");
    let mut conn = PgConnection::establish(&url).unwrap();
    shop(&mut conn, PAYMENT_JOBS / 5, PAYMENT_JOBS);
    diesel::sql_query(
        "INSERT INTO jobs (kind, queue, args, max_attempts, unique_key, run_at) \
         SELECT 'charge_order', 'payments', jsonb_build_object('order_id', id, 'user_id', user_id), 4, \
                'charge_order:' || id, now() - interval '1 second' FROM orders",
    )
    .execute(&mut conn)
    .unwrap();
    diesel::sql_query("VACUUM ANALYZE").execute(&mut conn).unwrap();
    let jobs_per_sec = drain(&services(&url, threads, batch), &mut conn, PAYMENT_JOBS);
    let paid = count(&mut conn, "SELECT count(*) FROM orders WHERE status = 'paid'");
    assert_eq!(paid, PAYMENT_JOBS, "every order was paid");
    jobs_per_sec
}

struct CheckoutRun {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Users 1..=n signed in, one after another (dozens of sign-ins at once from one address are what
/// the sign-in throttle is for): each with its agent, session cookie and CSRF token.
fn signed_in(base: &str, n: usize) -> Vec<(ureq::Agent, (String, String))> {
    (1..=n)
        .map(|user| {
            let agent = ureq::AgentBuilder::new().redirects(0).build();
            let session = session_for(base, &agent, &format!("u{user}@bench.example"));
            (agent, session)
        })
        .collect()
}

fn session_for(base: &str, agent: &ureq::Agent, email: &str) -> (String, String) {
    let login = agent.get(&format!("{base}/login")).call().unwrap();
    let cookie = login.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let body = login.into_string().unwrap();
    let marker = "name=\"csrf_token\" value=\"";
    let start = body.find(marker).unwrap() + marker.len();
    let token = body[start..start + 64].to_string();
    let signed = agent
        .post(&format!("{base}/login"))
        .set("Cookie", &cookie)
        .send_form(&[("csrf_token", &token), ("email", email), ("password", "bench-password"), ("next", "/")])
        .unwrap();
    let cookie = signed.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    (cookie, token)
}

fn checkouts() -> CheckoutRun {
    let url = fresh_database("agora_bench");
    let mut conn = PgConnection::establish(&url).unwrap();
    shop(&mut conn, CLIENTS as i64, CHECKOUTS as i64);
    let hash = agora::auth::password::hash("bench-password");
    diesel::update(agora::schema::users::table).set(agora::schema::users::password_hash.eq(hash)).execute(&mut conn).unwrap();
    let services = services(&url, 0, 20);
    let Served { base, handle } = serve(services.clone(), None);
    let orders: Vec<(i64, i64)> = agora::schema::orders::table
        .select((agora::schema::orders::id, agora::schema::orders::user_id))
        .load(&mut conn)
        .unwrap();
    let sessions = signed_in(&base, CLIENTS);
    let started = Instant::now();
    let clients: Vec<_> = (1..=CLIENTS as i64)
        .zip(sessions)
        .map(|(user, (agent, (cookie, token)))| {
            let mine: Vec<i64> = orders.iter().filter(|(_, u)| *u == user).map(|(o, _)| *o).collect();
            let base = base.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(mine.len());
                for order in mine {
                    let t = Instant::now();
                    let resp = agent
                        .post(&format!("{base}/orders/{order}/pay"))
                        .set("Cookie", &cookie)
                        .send_form(&[("csrf_token", &token)])
                        .unwrap();
                    assert_eq!(resp.status(), 303);
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let elapsed = started.elapsed();
    actix_web::rt::System::new().block_on(handle.stop(true));
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
    assert_eq!(count(&mut conn, "SELECT count(*) FROM jobs WHERE kind = 'charge_order'"), CHECKOUTS as i64);
    CheckoutRun { per_sec: latencies.len() as f64 / elapsed.as_secs_f64(), p50_ms: pct(0.50), p99_ms: pct(0.99) }
}

// --- payments end to end: the real server, the real gateway-sim, over HTTP --------------------

const E2E_CLIENTS: usize = 64;
const E2E_ORDERS: i64 = 20_000;

fn gateway_sim(latency_ms: u64) -> (Proc, String) {
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("gateway-sim")
        .env("GATEWAY_SIM_PORT", port.to_string())
        .env("GATEWAY_SUCCESS_RATE", "1")
        .env("GATEWAY_TIMEOUT_RATE", "0")
        .env("GATEWAY_LATENCY_MS", latency_ms.to_string())
        .env("GATEWAY_JITTER_MS", (latency_ms / 10).to_string())
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    until_up(&format!("{url}/stats"));
    (Proc(child), url)
}

fn agora_server(database_url: &str, gateway_url: &str) -> (Proc, String) {
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("GATEWAY_URL", gateway_url)
        .env("PORT", port.to_string())
        .env("REDIS_PREFIX", format!("bench-e2e:{}:", std::process::id()))
        .env("SESSION_SECRET", "b".repeat(64))
        .env("DB_POOL_SIZE", "32")
        .env("QUEUE_MAX_READY", "1000000")
        .env("FRAUD_VELOCITY_MAX", "1000000") // one bench user pays hundreds of orders
        .env("RUST_LOG", "warn")
        .env("METRICS_TOKEN", METRICS_TOKEN)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    until_up(&format!("{base}/healthz"));
    (Proc(child), base)
}

const METRICS_TOKEN: &str = "bench-scraper";

/// The sum of a counter's series at `/metrics` whose line starts with `series` (name and labels).
fn counter(base: &str, series: &str) -> f64 {
    let text = ureq::get(&format!("{base}/metrics")).set("Authorization", &format!("Bearer {METRICS_TOKEN}")).call().unwrap().into_string().unwrap();
    // `+ 0.0`: an empty sum is -0.0, which would print as "-0".
    text.lines().filter(|l| l.starts_with(series)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>() + 0.0
}

struct EndToEnd {
    /// Sessions read from PostgreSQL because Redis did not answer, of all session reads; and Redis
    /// calls that missed their deadline.
    sessions_redis_failed: f64,
    sessions: f64,
    redis_late: f64,
    pay_per_sec: f64,
    pay_p50_ms: f64,
    pay_p99_ms: f64,
    settled_per_sec: f64,
    in_flight_max: u64,
}

/// Pay for `E2E_ORDERS` orders over HTTP (64 signed-in clients, one order per request, each with
/// its session and CSRF token) while the server's workers settle them through gateway-sim.
fn end_to_end(latency_ms: u64) -> EndToEnd {
    let url = fresh_database("agora_bench_e2e");
    let mut conn = PgConnection::establish(&url).unwrap();
    shop(&mut conn, E2E_CLIENTS as i64, E2E_ORDERS);
    let hash = agora::auth::password::hash("bench-password");
    diesel::update(agora::schema::users::table).set(agora::schema::users::password_hash.eq(hash)).execute(&mut conn).unwrap();
    let orders: Vec<(i64, i64)> = agora::schema::orders::table
        .select((agora::schema::orders::id, agora::schema::orders::user_id))
        .load(&mut conn)
        .unwrap();
    let (_sim, sim_url) = gateway_sim(latency_ms);
    let (_server, base) = agora_server(&url, &sim_url);

    let ready = Arc::new(std::sync::Barrier::new(E2E_CLIENTS + 1));
    let sessions = signed_in(&base, E2E_CLIENTS);
    let clients: Vec<_> = (1..=E2E_CLIENTS as i64)
        .zip(sessions)
        .map(|(user, (agent, (cookie, token)))| {
            let mine: Vec<i64> = orders.iter().filter(|(_, u)| *u == user).map(|(o, _)| *o).collect();
            let (base, ready) = (base.clone(), ready.clone());
            std::thread::spawn(move || {
                ready.wait();
                let mut latencies = Vec::with_capacity(mine.len());
                for order in mine {
                    let t = Instant::now();
                    let resp = agent.post(&format!("{base}/orders/{order}/pay")).set("Cookie", &cookie).send_form(&[("csrf_token", &token)]).unwrap();
                    assert_eq!(resp.status(), 303);
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    ready.wait(); // every client signed in: the clock starts with the first Pay
    let started = Instant::now();
    let mut latencies: Vec<Duration> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let paying = started.elapsed();
    while count(&mut conn, "SELECT count(*) FROM payments WHERE status = 'completed'") < E2E_ORDERS {
        assert!(started.elapsed() < Duration::from_secs(600), "payments did not settle");
        std::thread::sleep(Duration::from_millis(20));
    }
    let settling = started.elapsed();
    let stats: serde_json::Value = ureq::get(&format!("{sim_url}/stats")).call().unwrap().into_json().unwrap();
    assert_eq!(stats["charges"].as_u64(), Some(E2E_ORDERS as u64), "one charge per order");
    let (sessions_redis_failed, sessions, redis_late) = (
        counter(&base, "agora_session_reads_total{from=\"database_redis_failed\"}"),
        counter(&base, "agora_session_reads_total"),
        counter(&base, "agora_redis_errors_total{kind=\"late\"}"),
    );
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
    EndToEnd {
        sessions_redis_failed,
        sessions,
        redis_late,
        pay_per_sec: latencies.len() as f64 / paying.as_secs_f64(),
        pay_p50_ms: pct(0.50),
        pay_p99_ms: pct(0.99),
        settled_per_sec: E2E_ORDERS as f64 / settling.as_secs_f64(),
        in_flight_max: stats["in_flight_max"].as_u64().unwrap_or(0),
    }
}

/// PostgreSQL's Pay figure and the two runs (0 ms, 300 ms), for the aims table.
fn payments_end_to_end(rows: &mut Vec<String>) -> (f64, Vec<EndToEnd>) {
    let limit = pgbench_pay();
    let mut runs = Vec::new();
    rows.push(format!(
        "| PostgreSQL alone: Pay's writes (payment + event + job, one commit), pgbench | 16 clients, 10 s | | {limit:.0} tx/s | | |"
    ));
    eprintln!("{}", rows.last().unwrap());
    for latency in [0, 300] {
        let run = end_to_end(latency);
        rows.push(format!(
            "| Pay accepted over HTTP while workers settle, gateway-sim at {latency} ms | {E2E_CLIENTS} clients, release server | {E2E_ORDERS} | {:.0} req/s ({:.0}% of PostgreSQL's) | {:.2} ms | {:.2} ms |",
            run.pay_per_sec,
            100.0 * run.pay_per_sec / limit,
            run.pay_p50_ms,
            run.pay_p99_ms
        ));
        eprintln!("{}", rows.last().unwrap());
        rows.push(format!(
            "| → sessions read from PostgreSQL because Redis missed its 50 ms deadline, at {latency} ms | {:.0} Redis calls late in the run | {:.0} | {:.0} of {:.0} session reads | | |",
            run.redis_late, run.sessions, run.sessions_redis_failed, run.sessions
        ));
        eprintln!("{}", rows.last().unwrap());
        rows.push(format!(
            "| settled payments, gateway-sim at {latency} ms (first Pay to last settle) | {} charges in flight at most (seen by the gateway) | {E2E_ORDERS} | {:.0} payments/s ({:.0}% of PostgreSQL's) | | |",
            run.in_flight_max,
            run.settled_per_sec,
            100.0 * run.settled_per_sec / limit
        ));
        eprintln!("{}", rows.last().unwrap());
        runs.push(run);
    }
    (limit, runs)
}

// --- thread pages ---------------------------------------------------------------------------

/// The N+1 baseline: every comment's replies loaded by their own query, every fragment rendered.
async fn naive_thread(path: actix_web::web::Path<i64>, pool: actix_web::web::Data<db::PgPool>) -> actix_web::HttpResponse {
    use agora::threads::{render, repo, tree};
    let post_id = path.into_inner();
    let pool = pool.get_ref().clone();
    let html = actix_web::web::block(move || {
        let mut conn = pool.get().unwrap();
        let post = repo::post(&mut conn, post_id).unwrap().unwrap();
        let tree = tree::build(repo::tree_naively(&mut conn, post_id).unwrap());
        let frame = render::Frame { post_id, parents: Default::default(), root_depth: 0, max_depth: i32::MAX };
        let keys = render::fragment_keys(&tree, &frame);
        let none = vec![None; keys.len()];
        format!("<h1>{}</h1>{}", post.title, render::render(&tree, &frame, &keys, none).unwrap().html)
    })
    .await
    .unwrap();
    actix_web::HttpResponse::Ok().content_type("text/html").body(html)
}

fn naive_route(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.route("/naive/{id}", actix_web::web::get().to(naive_thread));
}

struct Load {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `clients` threads asking for `url` back to back for `seconds`.
fn load(url: &str, clients: usize, seconds: f64) -> Load {
    load_encoded(url, clients, seconds, "identity")
}

/// `load`, accepting `encoding` as a browser does (`br`, `gzip`): the bytes as sent.
fn load_encoded(url: &str, clients: usize, seconds: f64, encoding: &str) -> Load {
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (url, encoding) = (url.to_string(), encoding.to_string());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                let mut latencies = Vec::new();
                let t0 = Instant::now();
                while t0.elapsed().as_secs_f64() < seconds {
                    let t = Instant::now();
                    let mut body = Vec::new();
                    std::io::Read::read_to_end(&mut agent.get(&url).set("Accept-Encoding", &encoding).call().unwrap().into_reader(), &mut body).unwrap();
                    assert!(body.len() > 1000);
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
    Load { per_sec: latencies.len() as f64 / elapsed, p50_ms: pct(0.5), p99_ms: pct(0.99) }
}

/// The 200-comment page's figures, for the aims table.
#[derive(Default)]
struct PageFigures {
    cold_per_sec: f64,
    warm_per_sec: f64,
    warm_br_per_sec: f64,
    page_bytes: usize,
    br_bytes: usize,
    gzip_bytes: usize,
    caching: Caching,
}

/// What a browser or proxy is told it may keep (aim 5), as the server answers.
#[derive(Default)]
struct Caching {
    /// A visitor's second request for the thread page with its `ETag`: status and body bytes.
    revalidated: (u16, usize),
    /// The stylesheet's path as the page names it, and its `Cache-Control`.
    stylesheet: (String, String),
}

fn caching(base: &str, post: i64, page: &str) -> Caching {
    let first = ureq::get(&format!("{base}/posts/{post}")).call().unwrap();
    let tag = first.header("ETag").unwrap_or("").to_string();
    let again = ureq::get(&format!("{base}/posts/{post}")).set("If-None-Match", &tag).call().unwrap();
    let status = again.status();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut again.into_reader(), &mut body).unwrap();
    let css = page.split("rel=\"stylesheet\" href=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("").to_string();
    let kept = ureq::get(&format!("{base}{css}")).call().unwrap().header("Cache-Control").unwrap_or("").to_string();
    Caching { revalidated: (status, body.len()), stylesheet: (css, kept) }
}

fn thread_pages(rows: &mut Vec<String>) -> PageFigures {
    let mut figures = PageFigures::default();
    use agora::threads::{repo, CommentBody};
    let url = fresh_database("agora_bench");
    let mut conn = PgConnection::establish(&url).unwrap();
    shop(&mut conn, 10, 1);
    let mut posts = Vec::new();
    for size in [200usize, 1000] {
        let post = repo::create_post(&mut conn, 1, &format!("A thread of {size}"), &CommentBody::parse("Benchmark thread.").unwrap()).unwrap();
        let mut ids: Vec<i64> = Vec::with_capacity(size);
        for i in 0..size {
            // Ten top-level comments, then every comment answers one three places back: a bushy tree ~5 deep.
            let parent = if i < 10 { None } else { Some(ids[(i - 10) / 3]) };
            let body = CommentBody::parse(&format!("Comment {i}: measured, not guessed; the cache decides.")).unwrap();
            ids.push(repo::add_comment(&mut conn, post, parent, 1 + (i as i64 % 10), &body).unwrap().unwrap().id);
        }
        posts.push((size, post));
    }
    diesel::sql_query("VACUUM ANALYZE").execute(&mut conn).unwrap();
    let redis = std::env::var("REDIS_URL").expect("run with `make bench`");
    let cached = |cache: Cache| {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let strategies = Strategies {
            gateway: Arc::new(SimulatedGateway::new(Simulation::always_succeeding(), agora::payments::gateway::Latency::default())),
            fraud: Arc::new(fraud::NoFraudCheck),
            clock,
        };
        let pool = db::build_pool(&url, 8).unwrap();
        Arc::new(Services::new(pool, cache, strategies, PaymentSettings::default(), JobSettings { workers: 0, ..JobSettings::default() }, AuthSettings::default()))
    };
    let warm_server = serve(cached(Cache::new(Some(&redis), &format!("bench:{}:", std::process::id()))), Some(naive_route));
    let cold_server = serve(cached(Cache::disabled()), Some(naive_route));
    const CLIENTS: usize = 4;
    const SECONDS: f64 = 4.0;
    for (size, post) in posts {
        let naive = load(&format!("{}/naive/{post}", cold_server.base), CLIENTS, SECONDS);
        let cold = load(&format!("{}/posts/{post}", cold_server.base), CLIENTS, SECONDS);
        // The page's size: what every request costs to read from Redis and to send.
        let page = ureq::get(&format!("{}/posts/{post}", warm_server.base)).call().unwrap().into_string().unwrap();
        let kib = page.len() / 1024;
        let warm = load(&format!("{}/posts/{post}", warm_server.base), CLIENTS, SECONDS);
        let sent = |encoding: &str| {
            let response = ureq::get(&format!("{}/posts/{post}", warm_server.base)).set("Accept-Encoding", encoding).call().unwrap();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).unwrap();
            bytes.len()
        };
        let (br_bytes, gzip_bytes) = (sent("br"), sent("gzip"));
        let (br_kib, gzip_kib) = (br_bytes / 1024, gzip_bytes / 1024);
        let warm_br = load_encoded(&format!("{}/posts/{post}", warm_server.base), CLIENTS, SECONDS, "br");
        let warm_gzip = load_encoded(&format!("{}/posts/{post}", warm_server.base), CLIENTS, SECONDS, "gzip");
        let br_name = format!("warm, brotli ({br_kib} KiB sent)");
        let gzip_name = format!("warm, gzip ({gzip_kib} KiB sent)");
        for (name, run) in [
            ("naive N+1, whole tree", &naive),
            ("cold (2 queries, no cache)", &cold),
            ("warm (Redis, 0 queries)", &warm),
            (br_name.as_str(), &warm_br),
            (gzip_name.as_str(), &warm_gzip),
        ] {
            rows.push(format!(
                "| thread page, {size} comments: {name} | {CLIENTS} clients, 2 HTTP workers, {kib} KiB page | {SECONDS} s | {:.0} req/s | {:.2} ms | {:.2} ms |",
                run.per_sec, run.p50_ms, run.p99_ms
            ));
            eprintln!("{}", rows.last().unwrap());
        }
        if size == 200 {
            figures = PageFigures {
                cold_per_sec: cold.per_sec,
                warm_per_sec: warm.per_sec,
                warm_br_per_sec: warm_br.per_sec,
                page_bytes: page.len(),
                br_bytes,
                gzip_bytes,
                caching: caching(&warm_server.base, post, &page),
            };
        }
        rows.push(format!(
            "| → {size} comments: warm ÷ naive | | | **{:.1}×** | | |\n| → {size} comments: warm ÷ cold | | | **{:.1}×** | | |",
            warm.per_sec / naive.per_sec,
            warm.per_sec / cold.per_sec
        ));
    }
    for served in [warm_server, cold_server] {
        actix_web::rt::System::new().block_on(served.handle.stop(true));
    }
    figures
}

/// The issue's probe, and a longer one whose filling and draining weigh little: the steady state.
const SETTLE_PAYMENTS: [i64; 2] = [3_000, 12_000];

/// The settling probe: `payments` Pays accepted with no worker running, then one
/// `agora worker` process (its defaults: 4 threads, 500 charges in flight) drains them through a
/// gateway that answers in 300 ms. Payments settled a second, from the worker's first claim to
/// the last settle; Little's law allows 500 ÷ 0.3 s = 1,667.
fn settle_probe(payments: i64) -> SettleProbe {
    let url = fresh_database("agora_bench_settle");
    let mut conn = PgConnection::establish(&url).unwrap();
    shop(&mut conn, 64, payments);
    let orders: Vec<(i64, i64)> = agora::schema::orders::table
        .select((agora::schema::orders::id, agora::schema::orders::user_id))
        .load(&mut conn)
        .unwrap();
    let limits = agora::orders::pipeline::QueueLimits { max_ready: i64::MAX, charge_attempts: 5 };
    for (order_id, user_id) in orders {
        agora::orders::pipeline::start_payment(&mut conn, agora::payments::PayOrder { user_id, order_id }, limits, chrono::Utc::now()).unwrap();
    }
    diesel::sql_query("VACUUM ANALYZE").execute(&mut conn).unwrap();
    let (_sim, sim_url) = gateway_sim(300);
    let started = Instant::now();
    let _worker = Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
            .arg("worker")
            .env("DATABASE_URL", &url)
            .env("GATEWAY_URL", &sim_url)
            .env("REDIS_PREFIX", format!("bench-settle:{}:", std::process::id()))
            .env("FRAUD_VELOCITY_MAX", "1000000")
            // SETTLE_LOG=debug shows each batch's phases (claim, prepare, gateway, settle).
            .env("RUST_LOG", std::env::var("SETTLE_LOG").map(|l| format!("warn,agora::orders::pipeline={l},agora::jobs::worker={l},agora::jobs::window={l}")).unwrap_or_else(|_| "warn".into()))
            .spawn()
            .unwrap(),
    );
    // Little's law speaks of the worker at work: the clock starts when its first charge is
    // claimed, after the process has started and connected (reported on its own).
    while count(&mut conn, "SELECT count(*) FROM payments WHERE status <> 'pending'") == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "the worker did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    let working = Instant::now();
    // The gateway's own count of calls waiting on it, sampled as the worker drains: how full the
    // worker keeps its 500 slots.
    let mut in_flight: Vec<f64> = Vec::new();
    while count(&mut conn, "SELECT count(*) FROM payments WHERE status = 'completed'") < payments {
        assert!(started.elapsed() < Duration::from_secs(300), "payments did not settle");
        if let Ok(stats) = ureq::get(&format!("{sim_url}/stats")).call() {
            let stats: serde_json::Value = stats.into_json().unwrap();
            in_flight.push(stats["in_flight"].as_f64().unwrap_or(0.0));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    SettleProbe {
        per_sec: payments as f64 / working.elapsed().as_secs_f64(),
        start_up: working - started,
        mean_in_flight: in_flight.iter().sum::<f64>() / in_flight.len().max(1) as f64,
    }
}

struct SettleProbe {
    /// Payments settled a second, from the first claim to the last settle.
    per_sec: f64,
    /// From starting the worker process to its first claim.
    start_up: Duration,
    /// Calls waiting on the gateway, on average over the drain.
    mean_in_flight: f64,
}

fn main() {
    // `cargo bench` passes --bench; nothing else is read.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let mut rows = Vec::new();
    // BENCH_ONLY=noop|payments|threads|endtoend|checkout|settle runs one section (for working on
    // it), BENCH_ONLY=throughput every section of this file; the default runs all.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only == "throughput" || only == name;
    for (threads, batch) in [(2, 100), (4, 200)].into_iter().filter(|_| wanted("noop")) {
        let rate = noop_jobs(threads, batch);
        rows.push(format!("| no-op jobs | {threads} workers, batch {batch} | {NOOP_JOBS} | {rate:.0} jobs/s | | |"));
        eprintln!("{}", rows.last().unwrap());
    }
    for (threads, batch) in [(4, 20), (8, 20)].into_iter().filter(|_| wanted("payments")) {
        let rate = payment_jobs(threads, batch);
        rows.push(format!("| payment jobs (fraud check, breaker, charge, zero-latency gateway) | {threads} workers, batch {batch} | {PAYMENT_JOBS} | {rate:.0} jobs/s | | |"));
        eprintln!("{}", rows.last().unwrap());
    }
    let mut aims = Vec::new();
    if wanted("threads") {
        let page = thread_pages(&mut rows);
        aims.push(format!("| a comment's HTML, 200-comment page | ≤ 600 bytes | ~1,160 | {} | | {} |", page.page_bytes / 200, yes(page.page_bytes / 200 <= 600)));
        aims.push(format!(
            "| the 200-comment page as sent | ≤ 30 KiB | 227 KiB, uncompressed | {:.1} KiB brotli, {:.1} KiB gzip | | {} |",
            page.br_bytes as f64 / 1024.0,
            page.gzip_bytes as f64 / 1024.0,
            yes(page.gzip_bytes <= 30 * 1024)
        ));
        aims.push(format!(
            "| warm 200-comment page, as a browser gets it | ≥ 8,000 req/s | 3,945 req/s (uncompressed) | {:.0} req/s brotli ({:.0} uncompressed) | | {} |",
            page.warm_br_per_sec,
            page.warm_per_sec,
            yes(page.warm_br_per_sec >= 8_000.0)
        ));
        aims.push(format!("| cold 200-comment page (2 queries) | ≥ 3,000 req/s | 1,424 req/s | {:.0} req/s | | {} |", page.cold_per_sec, yes(page.cold_per_sec >= 3_000.0)));
        let Caching { revalidated: (status, bytes), stylesheet: (css, kept) } = &page.caching;
        aims.push(format!(
            "| public pages revalidate; static files kept a year | `ETag` → 304; content-hashed names, `immutable` | 200 and the whole page every time; `/static/app.css` | the thread page again with its `ETag`: {status}, {bytes} bytes; `{css}`: `{kept}` | | {} |",
            yes(*status == 304 && *bytes == 0 && kept.contains("immutable") && css.matches('.').count() == 2)
        ));
    }
    if wanted("endtoend") {
        let (limit, runs) = payments_end_to_end(&mut rows);
        for (latency, run) in [0, 300].iter().zip(&runs) {
            let reached = (run.pay_per_sec >= 4_000.0 && run.pay_p99_ms <= 20.0) || run.pay_per_sec >= 0.7 * limit;
            aims.push(format!(
                "| Pay, 64 clients, workers settling at {latency} ms | ≥ 4,000 req/s, p99 ≤ 20 ms, or ≥ 70 % of PostgreSQL's | 1,160–1,390 req/s, p99 108–126 ms | {:.0} req/s ({:.0} %), p99 {:.0} ms | {limit:.0} tx/s | {} |",
                run.pay_per_sec,
                100.0 * run.pay_per_sec / limit,
                run.pay_p99_ms,
                yes(reached)
            ));
            aims.push(format!(
                "| sessions read from PostgreSQL because Redis was late, during that run | none | not measured | {:.0} of {:.0} | | {} |",
                run.sessions_redis_failed,
                run.sessions,
                yes(run.sessions_redis_failed == 0.0)
            ));
        }
    }
    if wanted("settle") {
        // The worker inherits WORKERS and CHARGES_IN_FLIGHT from this process, if set.
        let setting = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        let (threads, in_flight) = (setting("WORKERS", "4"), setting("CHARGES_IN_FLIGHT", "500"));
        for payments in SETTLE_PAYMENTS {
            let probe = settle_probe(payments);
            let rate = probe.per_sec;
            rows.push(format!(
                "| settling probe: {payments} accepted Pays drained by one `agora worker`, gateway at 300 ms ± 30 (first claim to last settle; {} ms from the process's start to its first claim) | {threads} threads, {in_flight} charges in flight, {:.0} waiting on average | {payments} | {rate:.0} payments/s | | |",
                probe.start_up.as_millis(),
                probe.mean_in_flight
            ));
            eprintln!("{}", rows.last().unwrap());
            aims.push(format!(
                "| settling probe, one worker process, gateway at 300 ms, {payments} payments | ≥ 1,500 payments/s | 896 payments/s (3,000 payments) | {rate:.0} payments/s ({:.0} calls waiting on average) | | {} |",
                probe.mean_in_flight,
                yes(rate >= 1_500.0)
            ));
        }
    }
    if wanted("checkout") {
    let run = checkouts();
    rows.push(format!(
        "| checkout: POST /orders/{{id}}/pay (payment + job, one transaction) | {CLIENTS} clients, 2 HTTP workers | {CHECKOUTS} | {:.0} req/s | {:.2} ms | {:.2} ms |",
        run.per_sec, run.p50_ms, run.p99_ms
    ));
    eprintln!("{}", rows.last().unwrap());
    }

    let aims = if aims.is_empty() {
        String::new()
    } else {
        format!(
            "\n## Issue 19's aims, from this run\n\n\"Before\" is the issue's own figure (an earlier run; this machine's speed varies from day to day: compare the PostgreSQL figure).\n\n\
             | aim | target | before | now | PostgreSQL | reached |\n| --- | --- | --- | --- | --- | --- |\n{}\n",
            aims.join("\n")
        )
    };
    let table = format!(
        "# Benchmarks\n\n`make bench`, {date}, on a machine with {cores} cores; PostgreSQL {pg} on the same machine, release build.\n\
         Each row is one run on a fresh database; ratios are only comparable within one run.\n\n\
         | what | configuration | n | throughput | p50 | p99 |\n| --- | --- | --- | --- | --- | --- |\n{}\n{aims}",
        rows.join("\n"),
        pg = pg_version(),
    );
    println!("\n{table}");
    std::fs::create_dir_all("bench").unwrap();
    std::fs::write("bench/results.md", table).unwrap();
}

fn yes(reached: bool) -> &'static str {
    if reached {
        "yes"
    } else {
        "**no**"
    }
}

fn pg_version() -> String {
    let mut admin = PgConnection::establish(&admin_url()).unwrap();
    diesel::dsl::sql::<diesel::sql_types::Text>("SELECT current_setting('server_version')").get_result(&mut admin).unwrap()
}
