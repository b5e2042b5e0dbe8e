//! The chat area's background work.

use diesel::prelude::*;

use super::repo;
use crate::jobs::{Job, JobError, JobHandler};

pub const RECONCILE_CHAT_COUNTS: &str = "reconcile_chat_counts";

/// Repairs `chats_count` / `messages_count` that drifted from their rows, and says what it fixed.
pub struct ReconcileChatCounts;

impl JobHandler for ReconcileChatCounts {
    fn kind(&self) -> &'static str {
        RECONCILE_CHAT_COUNTS
    }

    fn perform(&self, conn: &mut PgConnection, _: &Job) -> Result<(), JobError> {
        let (apps, chats) = repo::reconcile_counts(conn)?;
        if apps + chats > 0 {
            log::warn!("chat counts had drifted: repaired {apps} applications' chats_count and {chats} chats' messages_count");
        }
        Ok(())
    }
}
