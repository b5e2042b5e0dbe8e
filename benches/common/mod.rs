//! What both benchmarks share: the private PostgreSQL that `make bench` starts, and a fresh,
//! migrated database on it for each run.

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
pub struct Served {
    pub base: String,
    pub handle: actix_web::dev::ServerHandle,
}

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
