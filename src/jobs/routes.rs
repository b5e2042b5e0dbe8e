//! The Jobs page for administrators: queue depth, latency, throughput, dead jobs; and `/metrics`.

use actix_session::Session;
use actix_web::{HttpRequest, web, HttpResponse};
use askama::Template;

use super::queue::{self, MinuteCount, StateCount};
use super::{Job, JobsState};
use crate::auth::AdminUser;
use crate::web::{csrf, html, parse_id, see_other_with_notice, AppError, AppState, Db, Layout};

pub struct DeadJobView {
    pub id: i64,
    pub kind: String,
    pub queue: String,
    pub attempts: i32,
    pub args: String,
    pub last_error: String,
    pub finished: String,
    /// What Retry will do for this kind of job.
    pub retry_means: &'static str,
}

impl DeadJobView {
    fn new(job: Job, registry: &super::Registry) -> Self {
        let retry_means = registry.get(&job.kind).map_or(super::RETRY_RUNS_AGAIN, |h| h.retry_means());
        let last_error = job
            .errors
            .as_array()
            .and_then(|e| e.last())
            .and_then(|e| e.get("error"))
            .and_then(|e| e.as_str())
            .unwrap_or("")
            .to_string();
        DeadJobView {
            id: job.id,
            kind: job.kind,
            queue: job.queue,
            attempts: job.attempt,
            args: job.args.to_string(),
            last_error,
            finished: job.finished_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
            retry_means,
        }
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    layout: Layout,
    counts: Vec<StateCount>,
    latency: String,
    throughput: Vec<MinuteCount>,
    dead: Vec<DeadJobView>,
}

async fn page(req: HttpRequest, _admin: AdminUser, db: Db, state: web::Data<JobsState>) -> Result<HttpResponse, AppError> {
    let services = state.clone();
    let (counts, latency, throughput, dead) = db
        .run(move |conn| {
            let now = services.clock.now();
            Ok::<_, diesel::result::Error>((
                queue::counts(conn)?,
                queue::oldest_ready_age(conn, now)?,
                queue::throughput(conn, now, 5)?,
                queue::dead(conn, 50)?,
            ))
        })
        .await?;
    html(JobsPage {
        layout: Layout::new(&req),
        counts,
        latency: latency.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "none waiting".into()),
        throughput,
        dead: dead.into_iter().map(|job| DeadJobView::new(job, &state.registry)).collect(),
    })
}

async fn retry(req: HttpRequest, _admin: AdminUser, session: Session, db: Db, state: web::Data<JobsState>, path: web::Path<String>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let id = parse_id(&path)?;
    let (clock, registry) = (state.clock.clone(), state.registry.clone());
    let outcome: String = db
        .run(move |conn| {
            let Some(job) = queue::find(conn, id)? else { return Ok("That job no longer exists.".to_string()) };
            if let Some(handler) = registry.get(&job.kind) {
                if let Err(why) = handler.can_retry(conn, &job)? {
                    return Ok(format!("Not retried: {why}"));
                }
            }
            match queue::retry_dead(conn, id, clock.now()) {
                Ok(true) => Ok(format!("Job #{id} ({}) queued again: a worker runs it from its first attempt.", job.kind)),
                Ok(false) => Ok("That job is no longer dead.".to_string()),
                Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => {
                    Ok("An equal job is already waiting or running; this one was left dead.".to_string())
                }
                Err(e) => Err(e),
            }
        })
        .await?;
    state.wake.notify();
    Ok(see_other_with_notice(&req, "/admin/jobs", &outcome))
}

async fn discard(req: HttpRequest, _admin: AdminUser, session: Session, db: Db, path: web::Path<String>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let id = parse_id(&path)?;
    let removed = db.run(move |conn| queue::discard_dead(conn, id)).await?;
    Ok(see_other_with_notice(&req, "/admin/jobs", if removed { "Job discarded." } else { "That job is no longer dead." }))
}

/// The metrics, for an administrator or for a scraper holding `METRICS_TOKEN`. Job gauges and
/// those the areas registered (`JobsState::gauges`) are read from the database now; the rest are
/// this process's own counters.
async fn metrics(req: HttpRequest, db: Db, settings: web::Data<AppState>, state: web::Data<JobsState>) -> Result<HttpResponse, AppError> {
    let bearer = req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let scraper = matches!((&settings.metrics_token, bearer), (Some(token), Some(given)) if csrf::constant_time_eq(token.as_bytes(), given.as_bytes()));
    if !scraper {
        use actix_web::FromRequest;
        AdminUser::extract(&req).await?;
    }
    let services = state.clone();
    let counts = db
        .run(move |conn| {
            for gauges in &services.gauges {
                gauges.refresh(conn)?;
            }
            queue::counts(conn)
        })
        .await?;
    let m = crate::metrics::metrics();
    m.jobs.reset();
    for c in counts {
        m.jobs.with_label_values(&[&c.queue, &c.state]).set(c.count);
    }
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(m.render()))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/jobs", web::get().to(page))
        .route("/admin/jobs/{id}/retry", web::post().to(retry))
        .route("/admin/jobs/{id}/discard", web::post().to(discard))
        .route("/metrics", web::get().to(metrics));
}
