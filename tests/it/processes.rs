//! Issue 18: real `agora` processes, stopped as a process manager stops them (SIGTERM).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::db::{redis_url, TestDb};

/// An `agora` process of this build on a test database, killed if the test ends first.
struct Agora {
    child: Child,
    url: String,
    /// Its log (stderr), read back when it does not come up.
    log: std::path::PathBuf,
}

impl Agora {
    fn start(db: &TestDb, command: &str, env: &[(&str, &str)]) -> Agora {
        Agora::start_on(&db.url, db, command, env)
    }

    /// With its database reached at `database_url` (through a pooler, say).
    fn start_on(database_url: &str, db: &TestDb, command: &str, env: &[(&str, &str)]) -> Agora {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::env::temp_dir().join(format!("agora-{}-{command}-{port}.log", std::process::id()));
        let child = Command::new(env!("CARGO_BIN_EXE_agora"))
            .arg(command)
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url())
            .env("REDIS_PREFIX", format!("{}:", db.name))
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the agora binary of this build");
        Agora { child, url: format!("http://127.0.0.1:{port}"), log }
    }

    /// The status of `GET path`, or `None` when nothing answers.
    fn status(&self, path: &str) -> Option<u16> {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
        match agent.get(&format!("{}{path}", self.url)).call() {
            Ok(response) => Some(response.status()),
            Err(ureq::Error::Status(status, _)) => Some(status),
            Err(_) => None,
        }
    }

    /// Asks until `path` answers `status` (the process's own word that it has got there).
    fn until(&self, path: &str, status: Option<u16>, within: Duration) {
        let started = Instant::now();
        while self.status(path) != status {
            if started.elapsed() > within {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!("{path} did not answer {status:?} within {within:?}; its log ends:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
            std::thread::yield_now();
        }
    }

    fn terminate(&self) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to exit; past `within` it is killed (and has no exit code).
    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let pid = self.child.id();
        let (exited, told) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if told.recv_timeout(within).is_err() {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        });
        let status = self.child.wait().unwrap();
        let _ = exited.send(());
        watchdog.join().unwrap();
        status.code()
    }
}

impl Drop for Agora {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM: `/readyz` turns 503 at once (the proxy takes the server out) while requests are
/// still answered for the drain window; then the server stops and exits 0.
#[test]
fn a_server_told_to_stop_drains_then_exits_cleanly() {
    let db = TestDb::new();
    let mut server = Agora::start(&db, "serve", &[("WORKERS", "0"), ("DRAIN_SECS", "3")]);
    server.until("/readyz", Some(200), Duration::from_secs(30));
    server.terminate();
    server.until("/readyz", Some(503), Duration::from_secs(3));
    assert_eq!(server.status("/login"), Some(200), "still answering while draining");
    assert_eq!(server.exit_code(Duration::from_secs(30)), Some(0));
    assert_eq!(server.status("/readyz"), None, "gone");
}

/// Behind PgBouncer in transaction mode (Debian's 1.18 keeps no prepared statements across
/// transactions), `DATABASE_PREPARED_STATEMENTS=off` makes every query one exchange: nothing is
/// left prepared on the server connection for the next transaction to trip over.
#[test]
fn unprepared_connections_leave_no_prepared_statement_behind() {
    use agora::db::{build_pool_with, Statements};
    use diesel::prelude::*;
    let db = TestDb::new();
    let prepared_here = |statements: Statements| -> i64 {
        let pool = build_pool_with(&db.url, 1, statements).unwrap();
        let mut conn = pool.get().unwrap();
        for email in ["a@example.com", "b@example.com"] {
            agora::auth::repo::find_by_email(&mut conn, email).unwrap();
        }
        diesel::dsl::sql::<diesel::sql_types::BigInt>("SELECT count(*) FROM pg_prepared_statements").get_result(&mut conn).unwrap()
    };
    assert!(prepared_here(Statements::Prepared) > 0, "the default prepares and reuses");
    assert_eq!(prepared_here(Statements::Unprepared), 0);
}

/// With a replica (`DATABASE_READ_URL`; here another database standing in for one), the
/// dashboard's list, totals and CSV read from it, while who may see what, a payment's own page and
/// anything that decides money read the primary.
#[test]
fn the_dashboards_lists_read_from_the_replica_and_money_from_the_primary() {
    use crate::support::api::Api;
    use crate::support::fixtures;
    use agora::payments::gateway::ScriptedGateway;
    use std::sync::Arc;
    let replica = TestDb::new();
    let mut options = crate::support::app::TestAppOptions::new(Arc::new(ScriptedGateway::succeeding()));
    options.read_url = Some(replica.url.clone());
    let app = crate::support::TestApp::spawn_with(options);
    // The same staff and merchants on both (fresh databases number them alike).
    let (north, _) = fixtures::two_merchants(&mut app.conn(), "North");
    {
        use diesel::Connection;
        let mut replica_conn = diesel::PgConnection::establish(&replica.url).unwrap();
        assert_eq!(fixtures::two_merchants(&mut replica_conn, "North").0, north);
    }
    let north_id = fixtures::customer_public_id(&mut app.conn(), north);
    let api = Api::signed_in(&app.url, "alice@north.test");
    let paid = api.pay(&north_id, 4_200, "pm_card_visa");
    app.drain_jobs();
    let reference = paid["id"].as_str().unwrap().to_string();

    let person = crate::support::Client::new(&app.url);
    person.sign_in("alice@north.test", crate::support::fixtures::PASSWORD);
    let list = person.get("/dashboard/payments?from=2000-01-01").body;
    assert!(!list.contains(&reference) && list.contains("No completed payments match"), "the list is the replica's, which has not seen it: {list}");
    assert!(!person.get("/dashboard/payments.csv").body.contains(&reference), "and so is the export");
    let own = person.get(&format!("/dashboard/payments/{reference}"));
    assert_eq!(own.status, 200, "a payment's own page reads the primary");
    assert!(own.body.contains("42.00 USD"));
    let refund = api.post(&format!("/payments/{reference}/refunds"), &serde_json::json!({ "amount": 200 }), Some("from-primary"));
    assert_eq!(refund.status, 201, "money is decided on the primary: {}", refund.text);
}

/// A private PgBouncer (transaction mode) in front of the test database, when Debian's package is
/// installed (`make test` installs it).
struct Bouncer {
    child: Child,
    url: String,
    _dir: std::path::PathBuf,
}

impl Bouncer {
    fn start(db: &TestDb) -> Option<Bouncer> {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"].into_iter().find(|p| std::path::Path::new(p).exists())?;
        let admin = crate::support::db::admin_url();
        let server = admin.split('@').nth(1)?.split('/').next()?.to_string();
        let (host, port) = server.split_once(':')?;
        let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("agora-bouncer-{}-{listen}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("users.txt"), "\"agora\" \"\"\n").unwrap();
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n{name} = host={host} port={port} dbname={name}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {users}\npool_mode = transaction\nmax_client_conn = 500\n\
                 default_pool_size = 20\nserver_reset_query =\nignore_startup_parameters = extra_float_digits,options\n",
                name = db.name,
                users = dir.join("users.txt").display(),
            ),
        )
        .unwrap();
        let _ = Command::new("chmod").args(["-R", "a+rwX", &dir.display().to_string()]).status();
        // PgBouncer will not run as root.
        let mut command = if unsafe_is_root() { let mut c = Command::new("runuser"); c.args(["-u", "postgres", "--", binary]); c } else { Command::new(binary) };
        let child = command.arg(dir.join("pgbouncer.ini")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
        let url = format!("postgres://agora@127.0.0.1:{listen}/{}", db.name);
        let started = Instant::now();
        use diesel::Connection;
        while diesel::PgConnection::establish(&url).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "PgBouncer did not start");
            std::thread::yield_now();
        }
        Some(Bouncer { child, url, _dir: dir })
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        // `runuser` runs PgBouncer as its child, which killing `runuser` would leave running:
        // PgBouncer is found by its own configuration file, which no other has.
        let _ = Command::new("pkill").args(["-TERM", "-f", &self._dir.join("pgbouncer.ini").display().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request to one server, or `None` when nothing answered (a server restarting).
fn send(method: &str, url: &str, cookie: Option<&str>, form: &[(&str, &str)], json: Option<&serde_json::Value>, headers: &[(&str, &str)]) -> Option<(u16, String, Option<String>)> {
    let agent = ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(30)).build();
    let mut request = agent.request(method, url);
    if let Some(cookie) = cookie {
        request = request.set("Cookie", &format!("agora_session={cookie}"));
    }
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match json {
        Some(body) => request.send_json(body.clone()),
        None if method == "POST" && !form.is_empty() => request.send_form(form),
        None => request.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(_) => return None,
    };
    let location = response.header("location").map(str::to_string);
    Some((response.status(), response.into_string().unwrap_or_default(), location))
}

/// Issue 18: one of two servers and one of two workers are restarted (SIGTERM, then started
/// again) while Pays, refunds and chat creates go through both servers and a pooler: every
/// accepted request is in PostgreSQL, every payment is charged exactly once at a gateway that
/// does not deduplicate, every refund is made once, and no chat number repeats.
#[test]
fn rolling_restarts_of_servers_and_workers_lose_nothing_and_charge_once() {
    use crate::support::fixtures::{self, PASSWORD};
    use crate::support::GatewaySim;
    use agora::payments::gateway::Simulation;
    use diesel::prelude::*;

    let db = TestDb::new();
    let bouncer = Bouncer::start(&db);
    let database_url = bouncer.as_ref().map_or(db.url.clone(), |b| b.url.clone());
    if bouncer.is_none() {
        eprintln!("pgbouncer is not installed: the processes reach PostgreSQL directly");
    }
    // 200 ms a call: charges are in flight when the worker is stopped.
    let sim = GatewaySim::start_answering_in(Simulation::always_succeeding().without_deduplication(), Duration::from_millis(200));
    let mut conn = diesel::PgConnection::establish(&db.url).unwrap();
    let shopper = fixtures::user(&mut conn, "many@example.com");
    let products = fixtures::catalogue(&mut conn, 2);
    let merchant: i64 = agora::schema::products::table.find(products[0]).select(agora::schema::products::customer_id).first(&mut conn).unwrap();
    let staff = fixtures::user(&mut conn, "staff@example.com");
    diesel::insert_into(agora::schema::user_customers::table)
        .values((agora::schema::user_customers::user_id.eq(staff), agora::schema::user_customers::customer_id.eq(merchant), agora::schema::user_customers::role.eq("owner")))
        .execute(&mut conn)
        .unwrap();
    let orders: Vec<i64> = (0..60).map(|_| fixtures::order(&mut conn, shopper, &products)).collect();
    // Six more, paid and settled before the load, to be refunded during it.
    let to_refund: Vec<i64> = (0..6).map(|_| fixtures::order(&mut conn, shopper, &products)).collect();

    let secret = "a-session-secret-shared-by-every-server-of-the-installation-0123456789abcdef";
    let env: Vec<(&str, &str)> = vec![
        ("GATEWAY_URL", sim.url.as_str()),
        ("SESSION_SECRET", secret),
        ("DATABASE_PREPARED_STATEMENTS", "off"),
        ("FRAUD_VELOCITY_MAX", "100000"),
        ("DRAIN_SECS", "1"),
        ("HASH_THREADS", "2"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> { env.iter().copied().chain(extra.iter().copied()).collect() };
    let web_env = with(&[("WORKERS", "0")]);
    let worker_env = with(&[("WORKERS", "2")]);
    let mut web_a = Agora::start_on(&database_url, &db, "serve", &web_env);
    let web_b = Agora::start_on(&database_url, &db, "serve", &web_env);
    let mut worker_a = Agora::start_on(&database_url, &db, "worker", &worker_env);
    let _worker_b = Agora::start_on(&database_url, &db, "worker", &worker_env);
    for server in [&web_a, &web_b] {
        server.until("/readyz", Some(200), Duration::from_secs(60));
    }

    // One session, signed in on one server, used on both: sessions are shared.
    let person = crate::support::Client::new(&web_b.url);
    person.sign_in("many@example.com", PASSWORD);
    let cookie = person.cookie().unwrap();
    let token = person.csrf_token();
    let staff_token = crate::support::api::Api::signed_in(&web_b.url, "staff@example.com").token().unwrap();
    let chat = send("POST", &format!("{}/api/v1/chat_applications", web_b.url), None, &[], Some(&serde_json::json!({ "name": "Rolling" })), &[]).unwrap();
    let chat_token = serde_json::from_str::<serde_json::Value>(&chat.1).unwrap()["token"].as_str().unwrap().to_string();
    let settled = |conn: &mut diesel::PgConnection| -> i64 {
        agora::schema::payments::table.filter(agora::schema::payments::status.eq("completed")).count().get_result(conn).unwrap()
    };
    let started = Instant::now();
    for order in &to_refund {
        let answer = send("POST", &format!("{}/orders/{order}/pay", web_a.url), Some(&cookie), &[("csrf_token", token.as_str())], None, &[]).unwrap();
        assert_eq!(answer.0, 303, "{}", answer.1);
    }
    while settled(&mut conn) < 6 {
        assert!(started.elapsed() < Duration::from_secs(60), "the payments to refund are still unsettled");
        std::thread::yield_now();
    }
    let references: Vec<uuid::Uuid> = agora::schema::payments::table.select(agora::schema::payments::reference).order(agora::schema::payments::id).load(&mut conn).unwrap();

    // The load: Pays of the first half through server A, the rest through B; chat creates through
    // both; each request that finds its server gone goes to the other (what the proxy does).
    let servers = std::sync::Mutex::new(vec![web_a.url.clone(), web_b.url.clone()]);
    let accepted_pays = std::sync::Mutex::new(Vec::new());
    let chat_numbers = std::sync::Mutex::new(Vec::new());
    let (progress, halfway) = std::sync::mpsc::channel::<()>();
    let restarting = std::sync::atomic::AtomicBool::new(true);
    let (resumes, mut resumed): (Vec<_>, Vec<_>) = (0..3).map(|_| std::sync::mpsc::channel::<()>()).unzip();
    let refund_resume = resumed.pop().unwrap();
    std::thread::scope(|scope| {
        {
            // Refunds, half before the restart and half during it, through both servers. A
            // refund whose server went away is sent again to the other with the same key: the
            // idempotency key is what makes that safe.
            let (servers, progress, staff_token, references) = (&servers, progress.clone(), &staff_token, &references);
            scope.spawn(move || {
                for (i, reference) in references.iter().enumerate() {
                    let (bearer, key) = (format!("Bearer {staff_token}"), format!("refund-{i}"));
                    let headers = [("Authorization", bearer.as_str()), ("Idempotency-Key", key.as_str())];
                    let mut attempt = i;
                    loop {
                        let base = servers.lock().unwrap()[attempt % 2].clone();
                        match send("POST", &format!("{base}/api/v1/payments/{reference}/refunds"), None, &[], Some(&serde_json::json!({ "amount": 100 })), &headers) {
                            Some((201, _, _)) => break,
                            // The same key still running on the other server: ask again.
                            Some((409, body, _)) if body.contains("idempotency_key_in_use") => std::thread::yield_now(),
                            Some((status, body, _)) if status < 500 => panic!("refund {i} answered {status}: {body}"),
                            _ => attempt += 1,
                        }
                    }
                    if i == 2 {
                        progress.send(()).unwrap();
                        refund_resume.recv().unwrap();
                    }
                }
            });
        }
        for ((half, mine), resume) in orders.chunks(30).enumerate().zip(resumed) {
            let (servers, accepted_pays, progress, cookie, token) = (&servers, &accepted_pays, progress.clone(), &cookie, &token);
            scope.spawn(move || {
                for (i, order) in mine.iter().enumerate() {
                    let mut attempt = half;
                    loop {
                        let base = servers.lock().unwrap()[attempt % 2].clone();
                        match send("POST", &format!("{base}/orders/{order}/pay"), Some(cookie), &[("csrf_token", token.as_str())], None, &[]) {
                            Some((303, _, Some(location))) if location.starts_with("/payments/") => {
                                accepted_pays.lock().unwrap().push(*order);
                                break;
                            }
                            Some((status, body, _)) if status < 500 => panic!("Pay of order {order} answered {status}: {body}"),
                            _ => attempt += 1, // gone, or draining: the other server
                        }
                    }
                    // A third of the way: the rest is sent while server A drains, stops and restarts.
                    if i == 10 {
                        progress.send(()).unwrap();
                        resume.recv().unwrap();
                    }
                }
            });
        }
        {
            let (servers, chat_numbers, chat_token, restarting) = (&servers, &chat_numbers, &chat_token, &restarting);
            scope.spawn(move || {
                // At least 150, and on until the restart is over.
                let mut i = 0;
                while i < 150 || restarting.load(std::sync::atomic::Ordering::SeqCst) {
                    i += 1;
                    let mut attempt = i;
                    loop {
                        let base = servers.lock().unwrap()[attempt % 2].clone();
                        match send("POST", &format!("{base}/api/v1/chat_applications/{chat_token}/chats"), None, &[], None, &[]) {
                            Some((201, body, _)) => {
                                chat_numbers.lock().unwrap().push(serde_json::from_str::<serde_json::Value>(&body).unwrap()["number"].as_i64().unwrap());
                                break;
                            }
                            Some((status, body, _)) if status < 500 && status != 429 => panic!("a chat create answered {status}: {body}"),
                            _ => attempt += 1,
                        }
                    }
                }
            });
        }
        // Once both halves and the refunds are under way: restart server A and worker A.
        for _ in 0..3 {
            halfway.recv().unwrap();
        }
        web_a.terminate();
        worker_a.terminate();
        for resume in &resumes {
            resume.send(()).unwrap();
        }
        assert_eq!(web_a.exit_code(Duration::from_secs(60)), Some(0), "server A stopped cleanly");
        assert_eq!(worker_a.exit_code(Duration::from_secs(120)), Some(0), "worker A stopped cleanly");
        let new_a = Agora::start_on(&database_url, &db, "serve", &web_env);
        new_a.until("/readyz", Some(200), Duration::from_secs(60));
        servers.lock().unwrap()[0] = new_a.url.clone();
        worker_a = Agora::start_on(&database_url, &db, "worker", &worker_env);
        web_a = new_a;
        restarting.store(false, std::sync::atomic::Ordering::SeqCst);
    });

    let paid_orders = accepted_pays.lock().unwrap().clone();
    assert_eq!(paid_orders.len(), 60, "every Pay was accepted by one server or the other");
    while settled(&mut conn) < 66 {
        assert!(started.elapsed() < Duration::from_secs(120), "payments still unsettled: {} of 66", settled(&mut conn));
        std::thread::yield_now();
    }
    let refunded = |conn: &mut diesel::PgConnection| -> i64 {
        agora::schema::refunds::table.filter(agora::schema::refunds::status.eq("succeeded")).count().get_result(conn).unwrap()
    };
    while refunded(&mut conn) < 6 {
        assert!(started.elapsed() < Duration::from_secs(180), "refunds still pending");
        std::thread::yield_now();
    }

    // Each payment charged once, at a gateway that would have charged a repeat again.
    let keys: Vec<String> = agora::schema::payments::table.select(agora::schema::payments::gateway_key).load(&mut conn).unwrap();
    assert_eq!(keys.len(), 66);
    let charges = sim.charges();
    for key in &keys {
        assert_eq!(charges.iter().filter(|c| &c.idempotency_key == key).count(), 1, "payment {key} was charged once");
    }
    assert_eq!(charges.len(), 66);
    assert_eq!(sim.refunds().len(), 6, "each refund made once");
    // Every chat number given out once, and each in PostgreSQL once persisted.
    let mut numbers = chat_numbers.lock().unwrap().clone();
    numbers.sort_unstable();
    let given = numbers.len();
    numbers.dedup();
    assert!(given >= 150);
    assert_eq!(numbers.len(), given, "no chat number repeats");
    let stored = |conn: &mut diesel::PgConnection| -> i64 { agora::schema::chats::table.count().get_result(conn).unwrap() };
    while stored(&mut conn) < given as i64 {
        assert!(started.elapsed() < Duration::from_secs(240), "chats persisted: {} of {given}", stored(&mut conn));
        std::thread::yield_now();
    }
    let persisted: Vec<i64> = agora::schema::chats::table.select(agora::schema::chats::number).order(agora::schema::chats::number).load::<i32>(&mut conn).unwrap().into_iter().map(i64::from).collect();
    assert_eq!(persisted, numbers, "every number given out is in PostgreSQL, and nothing else");
    drop(worker_a);
}
