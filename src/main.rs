//! The `agora` command: `serve`, `migrate`, `seed`, `gateway-sim`.

use actix_web::cookie::Key;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use agora::app::{Services, Strategies};
use agora::cache::Cache;
use agora::clock::{Clock, SystemClock};
use agora::config::Config;
use agora::payments::gateway::{self, Latency, Simulation};
use agora::payments::{fraud, sim_server};
use agora::web::{self, AppState, ServerOptions};
use agora::{db, seed};

const USAGE: &str = "usage: agora <command>

commands:
  serve         run the web server and the job workers (WORKERS=0: web only)
  worker        run the job workers alone
  migrate       apply pending database migrations
  seed          load the demo data (idempotent)
  gateway-sim   run the simulated Stripe-like gateway (GATEWAY_SIM_HOST, GATEWAY_SIM_PORT: 127.0.0.1:8090)
  admin create-user EMAIL NAME [--admin]
                create an account; its password is read from standard input
  admin link EMAIL CUSTOMER
                link an account to a customer (an id, or a name: created when new)";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "serve" => serve(),
        "worker" => worker(),
        "migrate" => migrate(),
        "seed" => load_seed(),
        "gateway-sim" => gateway_sim(),
        "admin" => admin(&std::env::args().skip(2).collect::<Vec<_>>()),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn config() -> Result<Config, String> {
    Config::from_env().map_err(|e| e.to_string())
}

fn migrate() -> Result<(), String> {
    let config = config()?;
    let mut conn = db::connect(&config.database_url).map_err(|e| format!("cannot connect: {e}"))?;
    let applied = db::run_migrations(&mut conn)?;
    log::info!("migrations applied: {applied}");
    Ok(())
}

fn load_seed() -> Result<(), String> {
    let config = config()?;
    let mut conn = db::connect(&config.database_url).map_err(|e| format!("cannot connect: {e}"))?;
    let report = seed::load(&mut conn).map_err(|e| e.to_string())?;
    log::info!(
        "demo data ready: {} users, {} new orders, {} new payments, {} new comments",
        report.users, report.orders_created, report.payments_created, report.comments_created
    );
    log::info!(
        "demo chat application token: {token} (GET /api/v1/chat_applications/{token}/chats, or open /chats/{token})",
        token = report.chat_token
    );
    // The demo's month of payments was never charged through the gateway-sim this run uses: make
    // its charges known there, so that refunding one works.
    if let agora::config::GatewayConfig::Http { base_url, .. } = &config.gateway {
        match agora::payments::demo::register_with_sim(&mut conn, base_url, Duration::from_secs(15)) {
            Ok(n) => log::info!("gateway-sim at {base_url} knows the demo's charges ({n} new)"),
            Err(e) => log::warn!("the demo's charges are not known to the gateway ({e}): refunding them will fail"),
        }
    }
    Ok(())
}

fn admin(args: &[String]) -> Result<(), String> {
    use agora::merchants::admin;
    let config = config()?;
    let mut conn = db::connect(&config.database_url).map_err(|e| format!("cannot connect: {e}"))?;
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["create-user", email, name, flags @ ..] if flags.iter().all(|f| *f == "--admin") => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password).map_err(|e| format!("reading the password: {e}"))?;
            let id = admin::create_user(&mut conn, email, name, password.trim_end_matches(['\r', '\n']), !flags.is_empty())
                .map_err(|e| e.to_string())?;
            println!("created user {id} ({email})");
            Ok(())
        }
        ["link", email, customer] => {
            let id = admin::link(&mut conn, email, customer).map_err(|e| e.to_string())?;
            println!("{email} is linked to customer {id}");
            Ok(())
        }
        _ => Err(format!("unknown admin command\n\n{USAGE}")),
    }
}

fn session_key(config: &Config) -> Key {
    match &config.session_secret {
        Some(secret) => Key::derive_from(secret),
        None => {
            log::warn!("SESSION_SECRET is not set: sessions end when the server restarts");
            Key::generate()
        }
    }
}

fn services(config: &Config, serving: bool) -> Result<Arc<Services>, String> {
    let pool = db::build_pool_with(&config.database_url, config.db_pool_size, config.db_statements).map_err(|e| format!("database: {e}"))?;
    let cache = Cache::with_timing(config.redis_url.as_deref(), &config.redis_prefix, config.redis_timeout, config.redis_rest);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let strategies = Strategies {
        gateway: gateway::from_config(&config.gateway),
        fraud: Arc::new(fraud::rules(clock.clone(), config.fraud_velocity_max)),
        clock,
    };
    let mut services = Services::new(pool, cache, strategies, config.payments.clone(), config.jobs.clone(), config.auth.clone());
    services.chat_rate = config.chat_rate;
    if let Some(read_url) = &config.database_read_url {
        // Straight to the replica (not through the primary's pooler), prepared statements as the
        // primary's connections have them.
        services.read_pool = Some(db::build_pool_with(read_url, config.db_pool_size, config.db_statements).map_err(|e| format!("read replica: {e}"))?);
        log::info!("the dashboard's lists, totals and exports read from the replica at DATABASE_READ_URL");
    }
    if serving && config.chat_intake_redis {
        services.accept_chats_through_redis();
        log::info!("chat creates are accepted through Redis (CHAT_INTAKE=postgres numbers them in PostgreSQL instead)");
    }
    Ok(Arc::new(services))
}

/// The web server, and the workers unless `WORKERS=0`. SIGTERM drains: `/readyz` answers 503
/// for `DRAIN_SECS` so the proxy stops sending requests, then the server stops accepting and
/// finishes the requests in hand (up to 30 s), then the workers finish the jobs they hold. Ctrl-C
/// stops at once, just as gracefully.
#[actix_web::main]
async fn serve() -> Result<(), String> {
    let config = config()?;
    let services = services(&config, true)?;
    if let Err(e) = services.cache.ping().await {
        log::warn!("starting without Redis: {e}");
    }
    let workers = (config.jobs.workers > 0).then(|| services.start_workers());
    let listener = web::listen((config.host.as_str(), config.port)).map_err(|e| format!("bind: {e}"))?;
    log::info!("Agora is listening on http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let draining = web::Draining::default();
    let state = AppState {
        query_count_header: config.query_count_header,
        trusted_proxy_hops: config.trusted_proxy_hops,
        metrics_token: config.metrics_token.clone(),
        draining: draining.clone(),
    };
    let options = ServerOptions {
        session_key: session_key(&config),
        secure_cookies: config.secure_cookies,
        workers: None,
        mount: services.mount(),
        extra_routes: None,
    };
    let server = web::server(listener, state, options).map_err(|e| e.to_string())?;
    let handle = server.handle();
    let drain_for = std::time::Duration::from_secs(config.drain_secs);
    actix_web::rt::spawn(async move {
        let drain = match stop_signal().await {
            Stop::Terminate => drain_for,
            Stop::Interrupt => std::time::Duration::ZERO,
        };
        log::info!("stopping: /readyz answers 503 for {} s, then no new connections; requests in hand finish", drain.as_secs());
        draining.start();
        actix_web::rt::time::sleep(drain).await;
        handle.stop(true).await;
    });
    let served = server.await.map_err(|e| e.to_string());
    services.chat_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(workers) = workers {
        actix_web::web::block(move || workers.stop()).await.map_err(|e| e.to_string())?;
    }
    served
}

enum Stop {
    Terminate,
    Interrupt,
}

/// The next SIGTERM (a process manager's stop) or Ctrl-C.
async fn stop_signal() -> Stop {
    use actix_web::rt::signal;
    let mut terminate = match signal::unix::signal(signal::unix::SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(e) => {
            log::error!("cannot listen for SIGTERM ({e}); only Ctrl-C stops this process");
            let _ = signal::ctrl_c().await;
            return Stop::Interrupt;
        }
    };
    tokio::select! {
        _ = terminate.recv() => Stop::Terminate,
        _ = signal::ctrl_c() => Stop::Interrupt,
    }
}

/// Workers alone, for machines that only run jobs.
#[actix_web::main]
async fn worker() -> Result<(), String> {
    let config = config()?;
    let services = services(&config, false)?;
    let workers = services.start_workers();
    stop_signal().await;
    log::info!("stopping: finishing the jobs in hand");
    actix_web::web::block(move || workers.stop()).await.map_err(|e| e.to_string())
}

#[actix_web::main]
async fn gateway_sim() -> Result<(), String> {
    let port: u16 = std::env::var("GATEWAY_SIM_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8090);
    let rate = |name: &str, default: f64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let simulation = Simulation::new(
        rate("GATEWAY_SUCCESS_RATE", 0.7),
        rate("GATEWAY_TIMEOUT_RATE", 0.2),
        std::env::var("GATEWAY_SEED").ok().and_then(|s| s.parse().ok()),
    );
    let latency = Latency {
        latency: Duration::from_millis(rate("GATEWAY_LATENCY_MS", 0.0) as u64),
        jitter: Duration::from_millis(rate("GATEWAY_JITTER_MS", 0.0) as u64),
    };
    let host = std::env::var("GATEWAY_SIM_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let listener = web::listen((host.as_str(), port)).map_err(|e| format!("bind: {e}"))?;
    log::info!("gateway-sim listening on http://{host}:{port} (ledger at /charges)");
    sim_server::run(listener, Arc::new(simulation), latency).map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())
}
