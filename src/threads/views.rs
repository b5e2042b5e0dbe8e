//! The thread pages' templates and the page a cache entry holds: what the handlers in `routes`
//! fill in and render.

use askama::Template;
use std::borrow::Cow;

use super::repo::{self, CommentRow, PostRow};
use crate::web::Layout;

#[derive(Template)]
#[template(path = "thread_head.html")]
pub(super) struct ThreadHead<'a> {
    pub(super) post: &'a PostRow,
    pub(super) body_html: Cow<'a, str>,
    /// Set on a subthread ("continue this thread", a permalink): the comment it starts from.
    pub(super) root: Option<&'a CommentRow>,
}

#[derive(Template)]
#[template(path = "thread.html")]
pub(super) struct ThreadPage<'a> {
    pub(super) layout: Layout,
    pub(super) post_id: i64,
    pub(super) title: &'a str,
    pub(super) head: &'a str,
    pub(super) comments: &'a str,
    /// Per-user presentation (the reply links for signed-in people), kept out of shared fragments.
    pub(super) user_style: String,
    /// Who is looking, and the comments of this discussion they voted for (space-separated):
    /// app.js draws each comment's controls from them.
    pub(super) me: Option<i64>,
    pub(super) voted: String,
    /// On a comment's own page, its controls for someone without script.
    pub(super) root_controls: Option<RootControls>,
    /// Where the page's comment box posts, and what it says: the post, or a subthread's comment.
    pub(super) form_action: String,
    pub(super) form_label: &'static str,
}

pub(super) struct RootControls {
    pub(super) id: i64,
    pub(super) mine: bool,
    pub(super) voted: bool,
}

/// What is cached for a page: the same for everyone who sees it.
pub(super) struct SharedPage {
    pub(super) title: String,
    pub(super) head: String,
    pub(super) comments: String,
    /// A subthread's first comment (id, author), unless deleted: whose controls the page offers.
    pub(super) root: Option<(i64, i64)>,
}

impl SharedPage {
    pub(super) fn encode(&self) -> String {
        let root = self.root.map(|(id, author)| format!("{id}:{author}")).unwrap_or_default();
        format!("{root}\u{0}{}\u{0}{}\u{0}{}", self.title, self.head, self.comments)
    }

    pub(super) fn decode(raw: &str) -> Option<SharedPage> {
        let mut parts = raw.splitn(4, '\u{0}');
        let root = match parts.next()? {
            "" => None,
            pair => {
                let (id, author) = pair.split_once(':')?;
                Some((id.parse().ok()?, author.parse().ok()?))
            }
        };
        Some(SharedPage { root, title: parts.next()?.into(), head: parts.next()?.into(), comments: parts.next()?.into() })
    }
}

#[derive(Template)]
#[template(path = "posts.html")]
pub(super) struct PostsPage {
    pub(super) layout: Layout,
    pub(super) posts: Vec<repo::PostListing>,
}

#[derive(Template)]
#[template(path = "comment_form.html")]
pub(super) struct CommentForm {
    pub(super) layout: Layout,
    pub(super) heading: String,
    pub(super) action: String,
    pub(super) cancel: String,
    pub(super) quoted: Option<(String, String)>,
    pub(super) body: String,
    pub(super) problem: Option<String>,
    pub(super) submit: &'static str,
}

#[derive(Template)]
#[template(path = "comment_delete.html")]
pub(super) struct DeletePage {
    pub(super) layout: Layout,
    pub(super) comment: CommentRow,
}

#[derive(Template)]
#[template(path = "post_form.html")]
pub(super) struct NewPostPage {
    pub(super) layout: Layout,
    /// The discussion being edited; `None`: a new one.
    pub(super) editing: Option<i64>,
    pub(super) title: String,
    pub(super) body: String,
    pub(super) problem: Option<String>,
}

#[derive(Template)]
#[template(path = "post_delete.html")]
pub(super) struct PostDeletePage {
    pub(super) layout: Layout,
    pub(super) post: super::repo::PostRow,
}

#[derive(Template)]
#[template(path = "cache_metrics.html")]
pub(super) struct MetricsPage {
    pub(super) layout: Layout,
    pub(super) m: super::cache::MetricsSnapshot,
}
