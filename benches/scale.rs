//! `make bench` (or `BENCH_ONLY=scale make bench`): Agora in the shape it runs past one machine —
//! HAProxy in front of N `agora serve` (WORKERS=0), M `agora worker`, PgBouncer in transaction
//! mode before PostgreSQL, Redis, a gateway that answers in 300 ms — at 1 + 1, 2 + 2 and 3 + 2
//! processes, every request through the proxy and every query through the pooler. Writes
//! bench/scale.md.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::prelude::*;

use common::{admin_url, free_port, fresh_database, pgbench_pay, until_up, Proc};

const CLIENTS: usize = 32;
const WINDOW: Duration = Duration::from_secs(8);
const SHOPPERS: usize = 32;
/// Enough for 2,400 Pays a second through the window: a shopper out of orders would fail in a
/// tight loop and be counted (it was, once Pay passed 1,000 a second).
const ORDERS_EACH: usize = 600;
const SECRET: &str = "a-session-secret-shared-by-every-server-of-the-installation-0123456789abcdef";

fn root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Runs a program as the `postgres` user when this is root (PgBouncer will not run as root).
fn unprivileged(program: &str) -> Command {
    if root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    } else {
        Command::new(program)
    }
}

struct Cluster {
    base: String,
    _procs: Vec<Proc>,
}

/// PgBouncer, gateway-sim (300 ms), `web` servers, `workers` workers and HAProxy on `database`.
fn cluster(database: &str, web: usize, workers: usize) -> Cluster {
    let dir = std::env::temp_dir().join(format!("agora-scale-{}-{web}-{workers}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let admin = admin_url();
    let server = admin.split('@').nth(1).unwrap().split('/').next().unwrap().to_string();
    let (pg_host, pg_port) = server.split_once(':').unwrap();
    let bouncer_port = free_port();
    std::fs::write(dir.join("users.txt"), "\"agora\" \"\"\n").unwrap();
    std::fs::write(
        dir.join("pgbouncer.ini"),
        format!(
            "[databases]\n{database} = host={pg_host} port={pg_port} dbname={database}\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {bouncer_port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {}\npool_mode = transaction\n\
             max_client_conn = 2000\ndefault_pool_size = 40\nserver_reset_query =\nignore_startup_parameters = extra_float_digits,options\n",
            dir.join("users.txt").display()
        ),
    )
    .unwrap();
    let _ = Command::new("chmod").args(["-R", "a+rwX", &dir.display().to_string()]).status();
    let mut procs = vec![Proc(unprivileged("pgbouncer").arg(dir.join("pgbouncer.ini")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("pgbouncer"))];
    let database_url = format!("postgres://agora@127.0.0.1:{bouncer_port}/{database}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while PgConnection::establish(&database_url).is_err() {
        assert!(Instant::now() < deadline, "PgBouncer did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let agora = env!("CARGO_BIN_EXE_agora");
    let sim_port = free_port();
    procs.push(Proc(
        Command::new(agora)
            .arg("gateway-sim")
            .envs([("GATEWAY_SIM_PORT", sim_port.to_string()), ("GATEWAY_LATENCY_MS", "300".into()), ("GATEWAY_SUCCESS_RATE", "1".into()), ("GATEWAY_TIMEOUT_RATE", "0".into())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let redis = std::env::var("REDIS_URL").expect("run with `make bench`");
    let common_env = |command: &mut Command| {
        command
            .env("DATABASE_URL", &database_url)
            .env("DATABASE_PREPARED_STATEMENTS", "off")
            .env("REDIS_URL", &redis)
            .env("REDIS_PREFIX", format!("{database}:"))
            .env("GATEWAY_URL", format!("http://127.0.0.1:{sim_port}"))
            .env("SESSION_SECRET", SECRET)
            .env("FRAUD_VELOCITY_MAX", "1000000")
            // One application's token carries every client's messages: its own rate limit is not
            // what is measured.
            .env("CHAT_RATE_PER_SEC", "1000000")
            .env("CHAT_RATE_BURST", "1000000")
            .env("QUEUE_MAX_READY", "1000000")
            .env("TRUSTED_PROXY_HOPS", "1")
            .env("DB_POOL_SIZE", "16")
            .env("RUST_LOG", "warn,agora::chat=info")
            .stdout(Stdio::null());
    };
    // Each process's warnings go to a file of its own in `dir`, to say what bounds a figure.
    let log_file = |name: &str| std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut web_ports = Vec::new();
    for _ in 0..web {
        let port = free_port();
        let mut command = Command::new(agora);
        command.arg("serve").env("PORT", port.to_string()).env("WORKERS", "0");
        common_env(&mut command);
        command.stderr(log_file(&format!("web{}", web_ports.len() + 1)));
        procs.push(Proc(command.spawn().unwrap()));
        web_ports.push(port);
    }
    for i in 0..workers {
        let mut command = Command::new(agora);
        command.arg("worker");
        common_env(&mut command);
        command.stderr(log_file(&format!("worker{}", i + 1)));
        procs.push(Proc(command.spawn().unwrap()));
    }
    for port in &web_ports {
        until_up(&format!("http://127.0.0.1:{port}/readyz"));
    }
    let proxy_port = free_port();
    let servers: String = web_ports.iter().enumerate().map(|(i, p)| format!("    server web{i} 127.0.0.1:{p} check inter 1s\n")).collect();
    std::fs::write(
        dir.join("haproxy.cfg"),
        format!(
            "global\n    maxconn 8192\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n    option http-keep-alive\n\
             frontend agora\n    bind 127.0.0.1:{proxy_port}\n    option forwardfor\n    compression algo gzip\n    compression type text/html application/json\n    default_backend web\n\
             backend web\n    balance leastconn\n    option httpchk GET /readyz\n    retry-on conn-failure\n    option redispatch\n    retries 2\n{servers}"
        ),
    )
    .unwrap();
    procs.push(Proc(Command::new("haproxy").arg("-f").arg(dir.join("haproxy.cfg")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("haproxy")));
    let base = format!("http://127.0.0.1:{proxy_port}");
    until_up(&format!("{base}/readyz"));
    // Stopped in the reverse order of starting: the proxy first, PgBouncer last, so no process
    // outlives the pooler it talks through.
    procs.reverse();
    Cluster { base, _procs: procs }
}

/// What a load window measured.
#[derive(Clone, Copy)]
struct Rate {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    failed: u64,
}

impl Rate {
    fn cell(&self, unit: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let failed = if self.failed > 0 { format!(", {} failed", self.failed) } else { String::new() };
        format!("{:.0} {unit} (p50 {:.1} ms, p99 {:.0} ms{failed})", self.per_second, ms(self.p50), ms(self.p99))
    }
}

/// `CLIENTS` threads calling `request` for `WINDOW`: successes per second, their latencies, and
/// how many calls did not succeed.
fn load(request: impl Fn(usize, u64) -> bool + Sync) -> Rate {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let latencies = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (stop, done, failed, latencies, request) = (&stop, &done, &failed, &latencies, &request);
            scope.spawn(move || {
                let mut mine = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    if request(client, n) {
                        done.fetch_add(1, Ordering::Relaxed);
                        mine.push(at.elapsed());
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
                latencies.lock().unwrap().extend(mine);
            });
        }
        std::thread::sleep(WINDOW);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = latencies.into_inner().unwrap();
    latencies.sort_unstable();
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or_default();
    Rate { per_second: done.load(Ordering::Relaxed) as f64 / elapsed, p50: at(0.5), p99: at(0.99), failed: failed.load(Ordering::Relaxed) }
}

struct Figures {
    thread_page: Rate,
    chat: Rate,
    pay: Rate,
    settled: f64,
}

fn measure(web: usize, workers: usize) -> Figures {
    let name = format!("agora_bench_scale_{web}_{workers}");
    let url = fresh_database(&name);
    let mut conn = PgConnection::establish(&url).unwrap();
    // A discussion of 200 comments, read warm.
    let author = agora::auth::repo::create(&mut conn, "author@scale.test", "Author", "x").unwrap().unwrap();
    let post = agora::threads::repo::create_post(&mut conn, author, "Scale", &agora::threads::CommentBody::parse("Read me.").unwrap()).unwrap();
    let mut parents = vec![None];
    for i in 0..200 {
        let body = agora::threads::CommentBody::parse(&format!("Comment {i} about the cluster")).unwrap();
        let placed = agora::threads::repo::add_comment(&mut conn, post, parents[i % parents.len()], author, &body).unwrap().unwrap();
        if i < 40 {
            parents.push(Some(placed.id));
        }
    }
    // Shoppers with orders to pay.
    let merchant: i64 = diesel::sql_query("INSERT INTO customers (name) VALUES ('Scale Goods') RETURNING id")
        .get_result::<Id>(&mut conn)
        .unwrap()
        .id;
    let product = agora::orders::repo::ensure_product(&mut conn, merchant, "Widget", "9.99".parse().unwrap(), 10_000_000).unwrap();
    let hash = agora::auth::password::hash("shopper-password");
    let mut orders: Vec<Vec<i64>> = Vec::new();
    for s in 0..SHOPPERS {
        let user = agora::auth::repo::create(&mut conn, &format!("shopper{s}@scale.test"), "Shopper", &hash).unwrap().unwrap();
        orders.push((0..ORDERS_EACH).map(|_| agora::orders::repo::create(&mut conn, user, &[(product, 1)], i64::MAX).unwrap()).collect());
    }
    forget_redis(&format!("{name}:"));
    let cluster = cluster(&name, web, workers);
    let base = cluster.base.clone();
    let agent = ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(30)).build();

    let page = format!("{base}/posts/{post}");
    agent.get(&page).call().unwrap(); // warm
    let thread_page = load(|_, _| agent.get(&page).call().is_ok());

    let app: serde_json::Value = agent.post(&format!("{base}/api/v1/chat_applications")).send_json(serde_json::json!({ "name": "Scale" })).unwrap().into_json().unwrap();
    let token = app["token"].as_str().unwrap().to_string();
    for _ in 0..CLIENTS {
        agent.post(&format!("{base}/api/v1/chat_applications/{token}/chats")).call().unwrap();
    }
    let told = AtomicU64::new(0);
    let chat = load(|client, n| {
        let answer = agent
            .post(&format!("{base}/api/v1/chat_applications/{token}/chats/{}/messages", client + 1))
            .send_json(serde_json::json!({ "body": format!("message {n}") }));
        if let Err(e) = &answer {
            // The first few refusals, to say what bounds the figure.
            if told.fetch_add(1, Ordering::Relaxed) < 5 {
                let why = match e {
                    ureq::Error::Status(status, _) => format!("{status}"),
                    other => other.to_string(),
                };
                eprintln!("{web} + {workers}: a chat create failed: {why}");
            }
        }
        answer.is_ok()
    });

    // Each client thread is one signed-in shopper paying their own orders.
    let sessions: Vec<(String, String)> = (0..SHOPPERS)
        .map(|s| {
            let jar = ureq::AgentBuilder::new().redirects(0).build();
            let login = jar.get(&format!("{base}/login")).call().unwrap();
            let cookie = session_cookie(&login).unwrap_or_default();
            let body = login.into_string().unwrap();
            let csrf = field(&body, "csrf_token");
            let signed = jar
                .post(&format!("{base}/login"))
                .set("Cookie", &format!("agora_session={cookie}"))
                .send_form(&[("csrf_token", &csrf), ("email", &format!("shopper{s}@scale.test")), ("password", "shopper-password"), ("next", "/")]);
            let signed = match signed {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(e) => panic!("sign-in: {e}"),
            };
            let cookie = session_cookie(&signed).expect("a session");
            let home = jar.get(&format!("{base}/account")).set("Cookie", &format!("agora_session={cookie}")).call().unwrap().into_string().unwrap();
            (cookie, field(&home, "csrf_token"))
        })
        .collect();
    let completed_before: i64 = completed(&mut conn);
    let pay_started = Instant::now();
    let pay = load(|client, n| {
        let Some(order) = orders[client % SHOPPERS].get(n as usize) else { panic!("shopper {client} paid all {ORDERS_EACH} orders: raise ORDERS_EACH") };
        let (cookie, csrf) = &sessions[client % SHOPPERS];
        let answer = agent.post(&format!("{base}/orders/{order}/pay")).set("Cookie", &format!("agora_session={cookie}")).send_form(&[("csrf_token", csrf)]);
        matches!(answer, Ok(r) if r.status() == 303)
    });
    let accepted = payments(&mut conn) - completed_before;
    let deadline = Instant::now() + Duration::from_secs(300);
    while completed(&mut conn) - completed_before < accepted {
        assert!(Instant::now() < deadline, "payments did not settle");
        std::thread::sleep(Duration::from_millis(100));
    }
    let settled = (completed(&mut conn) - completed_before) as f64 / pay_started.elapsed().as_secs_f64();
    drop(cluster);
    Figures { thread_page, chat, pay, settled }
}

/// A fresh installation has a fresh Redis namespace too: an earlier run's chat counters and stream
/// belong to a database that no longer exists.
fn forget_redis(prefix: &str) {
    agora::cache::forget_namespace(&std::env::var("REDIS_URL").expect("run with `make bench`"), prefix).unwrap();
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

fn payments(conn: &mut PgConnection) -> i64 {
    agora::schema::payments::table.count().get_result(conn).unwrap()
}

fn completed(conn: &mut PgConnection) -> i64 {
    agora::schema::payments::table.filter(agora::schema::payments::status.eq("completed")).count().get_result(conn).unwrap()
}

fn session_cookie(response: &ureq::Response) -> Option<String> {
    response.all("set-cookie").into_iter().find_map(|c| c.strip_prefix("agora_session=").map(|v| v.split(';').next().unwrap_or("").to_string()))
}

fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in the page")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

fn main() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pgbench = pgbench_pay();
    let mut rows = Vec::new();
    for (web, workers) in [(1, 1), (2, 2), (3, 2)] {
        let f = measure(web, workers);
        rows.push(format!(
            "| {web} + {workers} | {} | {} | {} | {:.0} settled/s |",
            f.thread_page.cell("req/s"),
            f.chat.cell("created/s"),
            f.pay.cell("accepted/s"),
            f.settled,
        ));
        println!("{}", rows.last().unwrap());
    }
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let report = format!(
        "# Agora past one machine, on one machine\n\n\
         `BENCH_ONLY=scale make bench`, {now}, on a machine with {cores} cores: HAProxy in front of the web servers \
         (`agora serve`, WORKERS=0), `agora worker` processes, PgBouncer (transaction mode, 40 server connections) before \
         PostgreSQL, Redis, and a gateway that answers in 300 ms — all on this box, with the load client \
         ({CLIENTS} threads, {} s a figure) beside them. Every request goes through the proxy; every query through the pooler.\n\n\
         | web + worker processes | warm thread page (200 comments) | chat messages | Pay | payments settled at 300 ms |\n\
         | --- | --- | --- | --- | --- |\n{}\n\n\
         PostgreSQL alone, Pay's writes (payment + event + job, one commit; `bench/pay.pgbench`, 16 clients): **{pgbench:.0} tx/s**.\n\n\
         What bounds each figure, the chat intake's 503s at 2 + 2 and 3 + 2, and a deployment on the back of an envelope: the \
         README, *Past one machine*.\n",
        WINDOW.as_secs(),
        rows.join("\n"),
    );
    std::fs::write("bench/scale.md", report).unwrap();
    println!("wrote bench/scale.md");
}
