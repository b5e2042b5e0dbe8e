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
