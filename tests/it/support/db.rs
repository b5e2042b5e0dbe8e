//! A fresh database per test, cloned from a template migrated once per test process.

use diesel::prelude::*;
use diesel::sql_types::Text;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub fn admin_url() -> String {
    std::env::var("AGORA_ADMIN_DATABASE_URL").expect(
        "AGORA_ADMIN_DATABASE_URL is not set: run the tests with `make test`, which starts PostgreSQL and Redis",
    )
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").expect("REDIS_URL is not set: run the tests with `make test`")
}

fn url_for(database: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(base, _)| base).unwrap_or(&admin);
    format!("{base}/{database}")
}

fn admin() -> PgConnection {
    PgConnection::establish(&admin_url()).expect("connect to the test PostgreSQL server")
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    datname: String,
}

/// Databases left behind by test processes that are gone (killed, crashed) are dropped.
fn sweep_leftovers(conn: &mut PgConnection) {
    let names: Vec<Name> = diesel::sql_query("SELECT datname FROM pg_database WHERE datname LIKE 'agora\\_t%'")
        .load(conn)
        .unwrap_or_default();
    for Name { datname } in names {
        let pid = datname.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{datname}\" WITH (FORCE)")).execute(conn);
        }
    }
}

fn template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let name = format!("agora_tpl_{}", std::process::id());
        let mut conn = admin();
        sweep_leftovers(&mut conn);
        diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).unwrap();
        diesel::sql_query(format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).unwrap();
        let mut tpl = PgConnection::establish(&url_for(&name)).unwrap();
        agora::db::run_migrations(&mut tpl).expect("migrations apply to an empty database");
        name
    })
}

pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let template = template();
        let name = format!("agora_tst_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        diesel::sql_query(format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""))
            .execute(&mut admin())
            .expect("clone the template database");
        TestDb { url: url_for(&name), name }
    }

    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.url).expect("connect to the test database")
    }

    /// Drops the database under the app's feet, to see how it copes with losing it.
    pub fn drop_now(&self) {
        diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .execute(&mut admin())
            .unwrap();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)).execute(&mut admin());
        // What its app left in the shared Redis under its prefix (the database's name): left
        // there, fragments live a day, and a few `make test` runs filled the 256 MB instance,
        // where a Redis evicting at every write made `make bench`'s warm pages three times slower.
        let _ = agora::cache::forget_namespace(&redis_url(), &format!("{}:", self.name));
    }
}
