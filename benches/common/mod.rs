//! What the benchmarks share: the private PostgreSQL that `make bench` starts, a fresh, migrated
//! database on it for each run, and the processes a benchmark starts beside itself.

use diesel::prelude::*;

pub fn admin_url() -> String {
    std::env::var("AGORA_ADMIN_DATABASE_URL").expect("run with `make bench`")
}

pub fn fresh_database(name: &str) -> String {
    let mut admin = PgConnection::establish(&admin_url()).unwrap();
    diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).unwrap();
    diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin).unwrap();
    let url = format!("{}/{name}", admin_url().rsplit_once('/').unwrap().0);
    agora::db::run_migrations(&mut PgConnection::establish(&url).unwrap()).unwrap();
    url
}

/// The app on a loopback port, in-process (two HTTP workers), with optional extra routes.
#[allow(dead_code)] // the scale benchmark runs `agora` processes instead
pub struct Served {
    pub base: String,
    pub handle: actix_web::dev::ServerHandle,
}

#[allow(dead_code)]
pub fn serve(services: std::sync::Arc<agora::app::Services>, extra_routes: Option<fn(&mut actix_web::web::ServiceConfig)>) -> Served {
    use agora::web::{self, AppState, ServerOptions};
    let listener = web::listen("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let mount = services.mount();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let state = AppState { query_count_header: false, trusted_proxy_hops: 0, metrics_token: None, draining: Default::default() };
            let options = ServerOptions { session_key: actix_web::cookie::Key::generate(), secure_cookies: false, workers: Some(2), mount, extra_routes };
            let server = web::server(listener, state, options).unwrap();
            tx.send(server.handle()).unwrap();
            server.await.unwrap();
        })
    });
    Served { base, handle: rx.recv().unwrap() }
}

/// PostgreSQL's own rate for Pay's writes (bench/pay.pgbench), 16 clients for 10 s.
#[allow(dead_code)] // not every benchmark sets PostgreSQL's own figure beside its own
pub fn pgbench_pay() -> f64 {
    let url = fresh_database("agora_bench_pgbench");
    let mut conn = PgConnection::establish(&url).unwrap();
    for ddl in [
        "CREATE TABLE pgb_payments (LIKE payments INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)",
        "CREATE TABLE pgb_jobs (LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)",
        "CREATE SEQUENCE pgb_orders",
    ] {
        diesel::sql_query(ddl).execute(&mut conn).unwrap();
    }
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin/pgbench")))
        .filter(|p| p.exists())
        .max()
        .expect("pgbench (Debian's postgresql package) is installed");
    let out = std::process::Command::new(bin)
        .args(["-n", "-c", "16", "-j", "2", "-T", "10", "-f", "bench/pay.pgbench", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = ").and_then(|r| r.split_whitespace().next()).and_then(|t| t.parse().ok()))
        .unwrap_or_else(|| panic!("pgbench said: {text} {}", String::from_utf8_lossy(&out.stderr)))
}

/// A process a benchmark started, stopped when dropped: SIGTERM (its graceful stop), then killed
/// if it is still there after 20 s.
#[allow(dead_code)] // not every benchmark starts processes
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Asks `url` until it answers 200 (a benchmark may wait on real time; tests may not): each try is
/// the service's own word that it is up.
#[allow(dead_code)]
pub fn until_up(url: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ureq::get(url).timeout(std::time::Duration::from_secs(2)).call().is_err() {
        assert!(std::time::Instant::now() < deadline, "{url} did not come up");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
