//! Comment threads: posts with nested discussions, loaded in two queries, rendered per comment
//! with askama, and cached Russian-doll style in Redis so that a warm page costs no query at all.

pub mod cache;
pub mod counters;
pub mod discussions;
pub mod markdown;
pub mod render;
pub mod repo;
pub mod routes;

/// What the thread pages need, registered as app data by `app::mount`.
pub struct ThreadsState {
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
    pub threads: std::sync::Arc<cache::ThreadCache>,
}
pub mod tree;
mod views;
pub mod visitor_pages;

use actix_web::http::StatusCode;
use std::fmt;

/// Comments shown on one page; the rest are a "load more comments" link away.
pub const PAGE_SIZE: i64 = 200;
/// Levels shown below a page's top; deeper replies are a "continue this thread" link away.
pub const MAX_DEPTH: i32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum ThreadError {
    #[error("not found")]
    NotFound,
    #[error("only the author can change this comment")]
    NotAuthor,
    #[error("{0}")]
    Invalid(#[from] BodyError),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

impl From<ThreadError> for crate::web::AppError {
    fn from(e: ThreadError) -> Self {
        use crate::web::AppError;
        match e {
            // Someone else's comment is simply not editable: as if the page did not exist.
            ThreadError::NotFound | ThreadError::NotAuthor => AppError::NotFound,
            ThreadError::Invalid(e) => AppError::BadRequest(e.to_string()),
            ThreadError::Database(e) => e.into(),
        }
    }
}

/// What a comment (or a post) says: trimmed, not empty, at most 10,000 characters — and the
/// sanitized HTML it is shown as, cooked once here, before any connection or transaction is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentBody {
    text: String,
    html: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("A comment cannot be empty.")]
    Empty,
    #[error("A comment can be at most 10,000 characters long (this one has {0}).")]
    TooLong(usize),
}

impl CommentBody {
    pub fn parse(raw: &str) -> Result<CommentBody, BodyError> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 {
            Err(BodyError::Empty)
        } else if chars > 10_000 {
            Err(BodyError::TooLong(chars))
        } else {
            let text = trimmed.replace("\r\n", "\n");
            Ok(CommentBody { html: markdown::to_html(&text), text })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The body as pages show it (see `markdown`).
    pub fn html(&self) -> &str {
        &self.html
    }
}

impl fmt::Display for CommentBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A discussion's title: trimmed, on one line, 3 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostTitle(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TitleError {
    #[error("A title needs at least 3 characters.")]
    TooShort,
    #[error("A title can be at most 200 characters long (this one has {0}).")]
    TooLong(usize),
}

impl PostTitle {
    pub fn parse(raw: &str) -> Result<PostTitle, TitleError> {
        let one_line = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        match one_line.chars().count() {
            n if n < 3 => Err(TitleError::TooShort),
            n if n > 200 => Err(TitleError::TooLong(n)),
            _ => Ok(PostTitle(one_line)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a form sent from a page of an earlier sign-in is told.
const EXPIRED_FORM: &str = "This page was open from an earlier sign-in, so for your safety nothing was posted yet. Your text is kept below: check it and send it again.";

/// Why a sent form comes back instead of being acted on, and with which status.
pub struct Refused {
    pub problem: String,
    pub status: StatusCode,
}

impl Refused {
    pub fn expired() -> Refused {
        Refused { problem: EXPIRED_FORM.into(), status: StatusCode::FORBIDDEN }
    }

    pub fn invalid(problem: impl ToString) -> Refused {
        Refused { problem: problem.to_string(), status: StatusCode::UNPROCESSABLE_ENTITY }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_bodies_are_trimmed_and_bounded() {
        assert_eq!(CommentBody::parse("  hello \r\nworld ").unwrap().as_str(), "hello \nworld");
        assert_eq!(CommentBody::parse(" \n\t "), Err(BodyError::Empty));
        assert_eq!(CommentBody::parse(&"é".repeat(10_001)), Err(BodyError::TooLong(10_001)));
        assert!(CommentBody::parse(&"é".repeat(10_000)).is_ok());
    }

    #[test]
    fn titles_are_one_trimmed_line() {
        assert_eq!(PostTitle::parse("  Two\n words ").unwrap().as_str(), "Two words");
        assert_eq!(PostTitle::parse(" a "), Err(TitleError::TooShort));
        assert_eq!(PostTitle::parse(&"x".repeat(201)), Err(TitleError::TooLong(201)));
    }
}
