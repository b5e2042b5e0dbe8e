//! The periodic job that recomputes comment counters from the rows and repairs any drift.

use diesel::PgConnection;
use std::sync::Arc;

use super::cache::ThreadCache;
use super::repo;
use crate::jobs::{Job, JobError, JobHandler};

pub const RECONCILE_COUNTERS: &str = "reconcile_comment_counters";

pub struct ReconcileCounters {
    pub cache: Arc<ThreadCache>,
}

impl JobHandler for ReconcileCounters {
    fn kind(&self) -> &'static str {
        RECONCILE_COUNTERS
    }

    fn perform(&self, conn: &mut PgConnection, _: &Job) -> Result<(), JobError> {
        let fixed = repo::reconcile_counters(conn)?;
        if !fixed.is_empty() {
            log::warn!("comment counters had drifted on {} posts; repaired", fixed.len());
        }
        self.cache.bump_blocking(&fixed);
        Ok(())
    }
}
